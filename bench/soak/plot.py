#!/usr/bin/env python3
"""Plots a soak run's samples (soak.csv): RSS and file descriptors of the
broker and of the client process over time, with the broker kills marked."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, png: str) -> None:
    with open(src, newline="") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    if not rows:
        sys.exit(f"{src}: no samples")
    t = [r["seconds"] / 60 for r in rows]
    kills = [t[i] for i in range(1, len(rows)) if rows[i]["kills"] > rows[i - 1]["kills"]]
    fig, (rss, fds, rate) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    rss.plot(t, [r["broker_rss_kib"] / 1024 for r in rows], label="broker")
    rss.plot(t, [r["client_rss_kib"] / 1024 for r in rows], label="clients (one process)")
    rss.set_ylabel("RSS (MiB)")
    fds.plot(t, [r["broker_fds"] for r in rows], label="broker")
    fds.plot(t, [r["client_fds"] for r in rows], label="clients (one process)")
    fds.set_ylabel("open file descriptors")
    for key, label in (("published", "publishes acked"), ("consumed", "messages consumed"),
                       ("jobs_acked", "jobs acked"), ("kv_sets", "KV CAS")):
        rate.plot(t, [r[key] for r in rows], label=label)
    rate.set_ylabel("cumulative count")
    rate.set_xlabel("minutes")
    for ax in (rss, fds, rate):
        for k in kills:
            ax.axvline(k, color="red", alpha=0.3, linewidth=1)
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
    rss.set_title("soak: broker killed at the red lines")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print(f"plot: {png}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
