package flowmesh

/*
#include <flowmesh.h>
*/
import "C"

// Metrics returns this client's metrics in the Prometheus text exposition
// format (version 0.0.4): operations by kind and outcome, latency
// histograms, in-flight calls, messages and bytes published and delivered.
// Counted in the native core, so the series are the same in every
// language. Cheap and non-blocking; ErrClosed after Close.
//
// To expose it, serve it from an HTTP handler:
//
//	http.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
//		text, err := client.Metrics()
//		if err != nil { http.Error(w, err.Error(), 503); return }
//		w.Header().Set("Content-Type", flowmesh.MetricsContentType)
//		io.WriteString(w, text)
//	})
func (c *Client) Metrics() (string, error) {
	const op = "metrics"
	p, err := c.acquire(op)
	if err != nil {
		return "", err
	}
	defer c.release()
	var buf *C.fm_buf
	err = call(op, func() C.fm_status { return C.fm_client_metrics(p, &buf) })
	defer C.fm_buf_free(buf)
	if err != nil {
		return "", err
	}
	var n C.uintptr_t
	data := C.fm_buf_data(buf, &n)
	return string(goBytesNonNil(data, n)), nil
}

// MetricsContentType is the Content-Type of Metrics' text.
const MetricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// WithTier picks the stream's delivery tier: "durable" (default) or
// "memory" (kept in memory only, even on a durable engine; bounded, oldest
// dropped first; see the README).
func WithTier(tier string) StreamOption { return streamOpt("tier", tier) }
