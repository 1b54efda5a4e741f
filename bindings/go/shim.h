/* Small C helpers for the Go binding. Callbacks cannot be Go function
 * values, so these wrappers pass fixed C trampolines to the library and
 * carry a runtime/cgo.Handle (an integer, never a Go pointer) as user_data. */
#ifndef FLOWMESH_GO_SHIM_H
#define FLOWMESH_GO_SHIM_H

#include <stdint.h>
#include <stdlib.h>
#include <flowmesh.h>

fm_status fmgo_subscribe(fm_client *c, const char *stream, const fm_options *opts,
                         uintptr_t handle, fm_subscription **out);
fm_status fmgo_kv_watch(fm_client *c, const char *bucket, const char *prefix,
                        uintptr_t handle, fm_subscription **out);
fm_status fmgo_on_state(fm_client *c, uintptr_t handle);
fm_status fmgo_publish_async(fm_client *c, const char *stream, const fm_msg *msg,
                             uintptr_t handle);

/* Events (events.go). */
fm_status fmgo_event_subscribe(fm_client *c, const char *event_name, const fm_options *opts,
                               uintptr_t handle, fm_event_subscription **out);

#endif
