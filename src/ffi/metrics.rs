//! `fm_client_metrics`: the client's metrics as Prometheus text.

use super::args::fm_buf;
use super::args::{client_arg, to_c};
use super::call::new_out;
use super::client::fm_client;
use super::{fm_status, guard};

/// The client's metrics in the Prometheus text exposition format (version
/// 0.0.4, UTF-8, not NUL-terminated: use fm_buf_data for pointer and length):
/// operations by kind and outcome (`flowmesh_client_operations_total{op,status}`),
/// latency histograms per kind, in-flight calls, messages and bytes
/// published and delivered, jobs, reconnects and connection/breaker state.
/// See docs/ABI.md for every series. On FM_OK `*out` is a new buffer
/// owned by the caller (free with fm_buf_free); on error `*out` is NULL.
/// Thread-safe; cheap enough to call on every scrape. Returns
/// FM_ERR_INVALID_ARGUMENT (NULL client or out) or FM_ERR_CLOSED (closed client).
#[no_mangle]
pub unsafe extern "C" fn fm_client_metrics(client: *mut fm_client, out: *mut *mut fm_buf) -> fm_status {
    guard(|| {
        let out = new_out(out, "out")?;
        let c = client_arg(client)?;
        *out = to_c(fm_buf { data: c.client().metrics().encode().into() });
        Ok(())
    })
}
