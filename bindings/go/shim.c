#include "shim.h"
#include "_cgo_export.h"

/* Trampolines: the library calls these on its dispatcher threads; they only
 * forward to the exported Go functions in callbacks.go. */

static void on_message(void *ud, const fm_message *msg) {
    fmgoOnMessage((uintptr_t)ud, (fm_message *)msg);
}

static void on_publish(void *ud, fm_status status, fm_position pos) {
    fmgoOnPublish((uintptr_t)ud, status, pos.partition, pos.offset);
}

static void on_kv(void *ud, fm_kv_op op, const char *key, const uint8_t *value,
                  uintptr_t len, uint64_t revision) {
    fmgoOnKV((uintptr_t)ud, (int)op, (char *)key, (uint8_t *)value, len, revision);
}

static void on_state(void *ud, fm_conn_state state, fm_status cause, const char *detail) {
    fmgoOnState((uintptr_t)ud, (int)state, cause, (char *)detail);
}

fm_status fmgo_on_state(fm_client *c, uintptr_t handle) {
    return fm_client_on_state(c, on_state, (void *)handle);
}

fm_status fmgo_subscribe(fm_client *c, const char *stream, const fm_options *opts,
                         uintptr_t handle, fm_subscription **out) {
    return fm_subscribe(c, stream, opts, on_message, (void *)handle, out);
}

fm_status fmgo_kv_watch(fm_client *c, const char *bucket, const char *prefix,
                        uintptr_t handle, fm_subscription **out) {
    return fm_kv_watch(c, bucket, prefix, on_kv, (void *)handle, out);
}

fm_status fmgo_publish_async(fm_client *c, const char *stream, const fm_msg *msg,
                             uintptr_t handle) {
    return fm_publish_async(c, stream, msg, on_publish, (void *)handle);
}

/* ---- events (events.go) ---- */

static void on_event(void *ud, const fm_event *ev) {
    fmgoOnEvent((uintptr_t)ud, (fm_event *)ev);
}

fm_status fmgo_event_subscribe(fm_client *c, const char *event_name, const fm_options *opts,
                               uintptr_t handle, fm_event_subscription **out) {
    return fm_event_subscribe(c, event_name, opts, on_event, (void *)handle, out);
}
