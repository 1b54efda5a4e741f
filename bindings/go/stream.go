package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"strconv"
	"time"
	"unsafe"
)

// Message is a stream message. For publishing only Payload, Key and Headers
// are used; the other fields are filled on messages read or delivered.
type Message struct {
	Stream    string
	Partition uint32
	Offset    uint64
	Timestamp time.Time
	Key       []byte // partition key; nil means none
	Payload   []byte
	Headers   map[string]string
}

// Position is where a published message was stored.
type Position struct {
	Partition uint32
	Offset    uint64
}

// MsgOption adds optional fields to a published or enqueued message.
type MsgOption func(*msgConfig)

type msgConfig struct {
	msg      Message
	delay    time.Duration
	priority int32
	queueing bool // delay or priority given: only valid for Enqueue
	publish  [][2]string // per-publish options (tiers.go): only valid for Publish
}

// WithKey sets the partition key of a published message.
func WithKey(key []byte) MsgOption { return func(c *msgConfig) { c.msg.Key = key } }

// WithHeader adds one header.
func WithHeader(key, value string) MsgOption {
	return func(c *msgConfig) {
		if c.msg.Headers == nil {
			c.msg.Headers = map[string]string{}
		}
		c.msg.Headers[key] = value
	}
}

// WithHeaders adds headers.
func WithHeaders(h map[string]string) MsgOption {
	return func(c *msgConfig) {
		for k, v := range h {
			WithHeader(k, v)(c)
		}
	}
}

// WithDelay delays an enqueued job (Enqueue only).
func WithDelay(d time.Duration) MsgOption {
	return func(c *msgConfig) { c.delay, c.queueing = d, true }
}

// WithPriority sets the priority of an enqueued job; higher is reserved
// first (Enqueue only).
func WithPriority(p int32) MsgOption {
	return func(c *msgConfig) { c.priority, c.queueing = p, true }
}

func buildMsg(payload []byte, opts []MsgOption) msgConfig {
	c := msgConfig{msg: Message{Payload: payload}}
	for _, o := range opts {
		o(&c)
	}
	return c
}

func checkMsg(op string, m *Message) error {
	for k, v := range m.Headers {
		if err := checkString(op, "header", k+v); err != nil {
			return err
		}
	}
	return nil
}

// oneMsg copies name and m into a new arena. It runs before the native call
// starts, in the caller's goroutine, so a call abandoned on cancellation
// never reads the caller's buffers.
func oneMsg(name string, m *Message) (*arena, *C.char, *C.fm_msg) {
	var s sizer
	s.str(name)
	s.raw(unsafe.Sizeof(C.fm_msg{}))
	s.msg(m)
	a := newArena(uintptr(s))
	cname := a.str(name)
	cm := (*C.fm_msg)(a.alloc(unsafe.Sizeof(C.fm_msg{})))
	a.msg(cm, m)
	return a, cname, cm
}

// Publish appends payload to a stream and returns where it was stored.
// subject is a stream name or a dotted subject whose first token names the
// stream ("orders.created" goes to stream "orders" and subscribers of
// "orders.*" see it with Subject() "orders.created"). WithTier picks the
// delivery tier: TierMemory returns Position{0, OffsetNone} (nothing is
// stored); TierReplicated fails with ErrUnavailable where there is one copy.
func (c *Client) Publish(ctx context.Context, subject string, payload []byte, opts ...MsgOption) (Position, error) {
	const op = "publish"
	cfg := buildMsg(payload, opts)
	if cfg.queueing {
		return Position{}, goError(op, ErrInvalidArgument, "WithDelay and WithPriority apply to Enqueue only")
	}
	if err := firstErr(checkString(op, "subject", subject), checkMsg(op, &cfg.msg)); err != nil {
		return Position{}, err
	}
	var popts *C.fm_options
	if len(cfg.publish) > 0 {
		var err error
		if popts, err = newOptions(op, cfg.publish); err != nil {
			return Position{}, err
		}
	}
	var pos Position
	a, cname, cm := oneMsg(subject, &cfg.msg)
	release := func() {
		a.free()
		if popts != nil {
			C.fm_options_free(popts)
		}
	}
	err := c.doOwned(ctx, op, release, func(p *C.fm_client) error {
		var out C.fm_position
		err := call(op, func() C.fm_status { return C.fm_publish_with(p, cname, cm, popts, &out) })
		pos = Position{uint32(out.partition), uint64(out.offset)}
		return err
	})
	if err != nil {
		return Position{}, err
	}
	return pos, nil
}

// PublishBatch appends msgs in order and returns one position per message.
func (c *Client) PublishBatch(ctx context.Context, stream string, msgs []Message) ([]Position, error) {
	const op = "publish_batch"
	if err := checkString(op, "stream", stream); err != nil {
		return nil, err
	}
	for i := range msgs {
		if err := checkMsg(op, &msgs[i]); err != nil {
			return nil, err
		}
	}
	if len(msgs) == 0 {
		return []Position{}, nil
	}
	// Copy now: the caller may change msgs as soon as an abandoned call returns.
	var s sizer
	s.str(stream)
	s.raw(uintptr(len(msgs)) * unsafe.Sizeof(C.fm_msg{}))
	for i := range msgs {
		s.msg(&msgs[i])
	}
	a := newArena(uintptr(s))
	cname := a.str(stream)
	cms := unsafe.Slice((*C.fm_msg)(a.alloc(uintptr(len(msgs))*unsafe.Sizeof(C.fm_msg{}))), len(msgs))
	for i := range msgs {
		a.msg(&cms[i], &msgs[i])
	}
	var out []Position
	err := c.doOwned(ctx, op, a.free, func(p *C.fm_client) error {
		pos := (*C.fm_position)(C.calloc(C.uintptr_t(len(msgs)), C.uintptr_t(unsafe.Sizeof(C.fm_position{}))))
		defer C.free(unsafe.Pointer(pos))
		err := call(op, func() C.fm_status {
			return C.fm_publish_batch(p, cname, &cms[0], C.uintptr_t(len(msgs)), pos)
		})
		if err == nil {
			out = make([]Position, len(msgs))
			for i, x := range unsafe.Slice(pos, len(msgs)) {
				out[i] = Position{uint32(x.partition), uint64(x.offset)}
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PublishFuture is the pending result of PublishAsync.
type PublishFuture struct {
	done chan struct{}
	pos  Position
	err  error
}

// Done is closed when the publish has completed.
func (f *PublishFuture) Done() <-chan struct{} { return f.done }

// Result returns the outcome; it blocks until Done is closed.
func (f *PublishFuture) Result() (Position, error) {
	<-f.done
	return f.pos, f.err
}

// Wait is Result bounded by ctx; the publish itself is not cancelled.
func (f *PublishFuture) Wait(ctx context.Context) (Position, error) {
	select {
	case <-f.done:
		return f.pos, f.err
	case <-ctx.Done():
		return Position{}, ctx.Err()
	}
}

func (f *PublishFuture) resolve(st C.fm_status, detail string, pos Position) {
	f.pos = pos
	f.err = statusError("publish_async", st, detail)
	close(f.done)
}

// PublishAsync hands the message to the library and returns at once; the
// future completes when the library reports the result. Close and Flush
// wait for outstanding futures. ctx bounds only the hand-off.
func (c *Client) PublishAsync(ctx context.Context, stream string, payload []byte, opts ...MsgOption) (*PublishFuture, error) {
	const op = "publish_async"
	cfg := buildMsg(payload, opts)
	if cfg.queueing {
		return nil, goError(op, ErrInvalidArgument, "WithDelay and WithPriority apply to Enqueue only")
	}
	if len(cfg.publish) > 0 {
		return nil, goError(op, ErrInvalidArgument, "WithTier, WithRequireAck and WithPublishTimeout apply to Publish only")
	}
	if err := firstErr(checkString(op, "stream", stream), checkMsg(op, &cfg.msg)); err != nil {
		return nil, err
	}
	f := &PublishFuture{done: make(chan struct{})}
	a, cname, cm := oneMsg(stream, &cfg.msg)
	err := c.doOwned(ctx, op, a.free, func(p *C.fm_client) error {
		h := cgo.NewHandle(f)
		err := call(op, func() C.fm_status { return C.fmgo_publish_async(p, cname, cm, C.uintptr_t(h)) })
		if err != nil {
			h.Delete() // the callback never runs for a refused message
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Flush waits until every PublishAsync issued before it has completed.
func (c *Client) Flush(ctx context.Context) error {
	const op = "flush"
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.release()
	for {
		// Native waits are sliced so ctx and Close are noticed promptly.
		d, over := sliceWait(ctx, time.Now().Add(waitSlice))
		if over {
			return context.DeadlineExceeded // ctx's timer may lag its deadline
		}
		ms := C.uint64_t(d.Milliseconds())
		if ms == 0 {
			ms = 1
		}
		err := call(op, func() C.fm_status { return C.fm_flush(p, ms) })
		if err == nil || !isStatus(err, statusTimeout) {
			return err
		}
		if e := ctx.Err(); e != nil {
			return e
		}
		select {
		case <-c.closing:
			return goError(op, ErrClosed, "client closed while flushing")
		default:
		}
	}
}

func isStatus(err error, code int) bool {
	e, ok := err.(*Error)
	return ok && e.Code == code
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// goMessage copies a borrowed native message.
func goMessage(m *C.fm_message) *Message {
	return &Message{
		Stream:    C.GoString(m.stream),
		Partition: uint32(m.partition),
		Offset:    uint64(m.offset),
		Timestamp: time.UnixMilli(int64(m.timestamp_ms)),
		Key:       goBytes(m.key, m.key_len),
		Payload:   goBytesNonNil(m.payload, m.payload_len),
		Headers:   goHeaders(m.headers, m.headers_len),
	}
}

func goBytesNonNil(p *C.uint8_t, n C.uintptr_t) []byte {
	if b := goBytes(p, n); b != nil {
		return b
	}
	return []byte{}
}

// Read returns up to max messages of one partition starting at offset.
// Reading a stream that never existed is ErrNotFound.
func (c *Client) Read(ctx context.Context, stream string, partition uint32, offset uint64, max int) ([]*Message, error) {
	const op = "read"
	if err := checkString(op, "stream", stream); err != nil {
		return nil, err
	}
	if max < 0 {
		return nil, goError(op, ErrInvalidArgument, "max must not be negative")
	}
	var out []*Message
	err := c.do(ctx, op, func(p *C.fm_client) error {
		cname := C.CString(stream)
		defer C.free(unsafe.Pointer(cname))
		var ms *C.fm_messages
		err := call(op, func() C.fm_status {
			return C.fm_read(p, cname, C.uint32_t(partition), C.uint64_t(offset), C.uintptr_t(max), &ms)
		})
		defer C.fm_messages_free(ms)
		if err != nil {
			return err
		}
		n := int(C.fm_messages_len(ms))
		out = make([]*Message, n)
		for i := 0; i < n; i++ {
			out[i] = goMessage(C.fm_messages_get(ms, C.uintptr_t(i)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CommitOffset records offset as the last message group processed in a partition.
func (c *Client) CommitOffset(ctx context.Context, stream, group string, partition uint32, offset uint64) error {
	const op = "commit_offset"
	if err := firstErr(checkString(op, "stream", stream), checkString(op, "group", group)); err != nil {
		return err
	}
	return c.do(ctx, op, func(p *C.fm_client) error {
		cs, cg := C.CString(stream), C.CString(group)
		defer C.free(unsafe.Pointer(cs))
		defer C.free(unsafe.Pointer(cg))
		return call(op, func() C.fm_status {
			return C.fm_commit_offset(p, cs, cg, C.uint32_t(partition), C.uint64_t(offset))
		})
	})
}

// GetOffset returns the committed offset of group; ErrNotFound if none.
func (c *Client) GetOffset(ctx context.Context, stream, group string, partition uint32) (uint64, error) {
	const op = "get_offset"
	if err := firstErr(checkString(op, "stream", stream), checkString(op, "group", group)); err != nil {
		return 0, err
	}
	var off uint64
	err := c.do(ctx, op, func(p *C.fm_client) error {
		cs, cg := C.CString(stream), C.CString(group)
		defer C.free(unsafe.Pointer(cs))
		defer C.free(unsafe.Pointer(cg))
		var out C.uint64_t
		err := call(op, func() C.fm_status { return C.fm_get_offset(p, cs, cg, C.uint32_t(partition), &out) })
		off = uint64(out)
		return err
	})
	if err != nil {
		return 0, err
	}
	return off, nil
}

// LatestOffset returns the offset the next message of the partition will
// get (0 when empty); ErrNotFound if the stream does not exist.
func (c *Client) LatestOffset(ctx context.Context, stream string, partition uint32) (uint64, error) {
	const op = "latest_offset"
	if err := checkString(op, "stream", stream); err != nil {
		return 0, err
	}
	var off uint64
	err := c.do(ctx, op, func(p *C.fm_client) error {
		cs := C.CString(stream)
		defer C.free(unsafe.Pointer(cs))
		var out C.uint64_t
		err := call(op, func() C.fm_status { return C.fm_get_latest_offset(p, cs, C.uint32_t(partition), &out) })
		off = uint64(out)
		return err
	})
	if err != nil {
		return 0, err
	}
	return off, nil
}

// StreamOption configures CreateStream.
type StreamOption func(*streamConfig)

type streamConfig struct{ kv [][2]string }

func streamOpt(k, v string) StreamOption {
	return func(c *streamConfig) { c.kv = append(c.kv, [2]string{k, v}) }
}

// WithPartitions sets the partition count (default 1).
func WithPartitions(n uint32) StreamOption {
	return streamOpt("partitions", strconv.FormatUint(uint64(n), 10))
}

// WithMaxAge drops messages older than d.
func WithMaxAge(d time.Duration) StreamOption {
	return streamOpt("max_age_ms", strconv.FormatInt(d.Milliseconds(), 10))
}

// WithMaxBytes bounds the stored size of the stream.
func WithMaxBytes(n uint64) StreamOption { return streamOpt("max_bytes", strconv.FormatUint(n, 10)) }

// WithMaxMessages bounds the number of stored messages.
func WithMaxMessages(n uint64) StreamOption {
	return streamOpt("max_messages", strconv.FormatUint(n, 10))
}

// CreateStream creates stream, or succeeds if it exists with the same
// partition count; ErrAlreadyExists if it exists with another one. Streams
// are also created on first publish with one partition.
func (c *Client) CreateStream(ctx context.Context, stream string, opts ...StreamOption) error {
	const op = "create_stream"
	if err := checkString(op, "stream", stream); err != nil {
		return err
	}
	var cfg streamConfig
	for _, o := range opts {
		o(&cfg)
	}
	return c.streamCall(ctx, op, stream, cfg.kv,
		func(p *C.fm_client, cs *C.char, o *C.fm_options) C.fm_status { return C.fm_stream_create(p, cs, o) })
}

// streamCall runs fn with the stream's name and its options (key=value
// pairs) as C values, freed afterwards: create and update share it.
func (c *Client) streamCall(ctx context.Context, op, stream string, kv [][2]string,
	fn func(p *C.fm_client, cs *C.char, o *C.fm_options) C.fm_status) error {
	return c.do(ctx, op, func(p *C.fm_client) error {
		copts, err := newOptions(op, kv)
		if err != nil {
			return err
		}
		defer C.fm_options_free(copts)
		cs := C.CString(stream)
		defer C.free(unsafe.Pointer(cs))
		return call(op, func() C.fm_status { return fn(p, cs, copts) })
	})
}

// Partitions returns the partition count of stream; ErrNotFound if absent.
func (c *Client) Partitions(ctx context.Context, stream string) (uint32, error) {
	const op = "stream_partitions"
	if err := checkString(op, "stream", stream); err != nil {
		return 0, err
	}
	var n uint32
	err := c.do(ctx, op, func(p *C.fm_client) error {
		cs := C.CString(stream)
		defer C.free(unsafe.Pointer(cs))
		var out C.uint32_t
		err := call(op, func() C.fm_status { return C.fm_stream_partitions(p, cs, &out) })
		n = uint32(out)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// SubOption configures Subscribe and SubscribeChan.
type SubOption func(*subConfig)

type subConfig struct {
	group      string
	partition  *uint32
	start      string
	autoCommit *bool
	buffer     int
}

// WithGroup joins consumer group g: offsets are committed per group and,
// unless another start is given, delivery resumes after the committed offset.
func WithGroup(g string) SubOption { return func(c *subConfig) { c.group = g } }

// WithPartition delivers only one partition (default: all).
func WithPartition(p uint32) SubOption { return func(c *subConfig) { c.partition = &p } }

// StartEarliest delivers from the first stored message.
func StartEarliest() SubOption { return func(c *subConfig) { c.start = "earliest" } }

// StartLatest delivers only messages published after subscribing (the default without a group).
func StartLatest() SubOption { return func(c *subConfig) { c.start = "latest" } }

// StartCommitted resumes after the group's committed offset (the default with a group).
func StartCommitted() SubOption { return func(c *subConfig) { c.start = "committed" } }

// StartAt delivers from offset.
func StartAt(offset uint64) SubOption {
	return func(c *subConfig) { c.start = strconv.FormatUint(offset, 10) }
}

// WithAutoCommit turns committing each message after delivery on or off
// (default on with a group).
func WithAutoCommit(on bool) SubOption { return func(c *subConfig) { c.autoCommit = &on } }

// WithBuffer sets the channel capacity of SubscribeChan and WatchChan
// (default 64). When the channel is full the library's dispatcher waits, so
// a slow reader slows delivery instead of growing memory.
func WithBuffer(n int) SubOption { return func(c *subConfig) { c.buffer = n } }

func (sc *subConfig) options() [][2]string {
	var kv [][2]string
	if sc.group != "" {
		kv = append(kv, [2]string{"group", sc.group})
	}
	if sc.partition != nil {
		kv = append(kv, [2]string{"partition", strconv.FormatUint(uint64(*sc.partition), 10)})
	}
	if sc.start != "" {
		kv = append(kv, [2]string{"start", sc.start})
	}
	if sc.autoCommit != nil {
		kv = append(kv, [2]string{"auto_commit", strconv.FormatBool(*sc.autoCommit)})
	}
	return kv
}

func buildSub(opts []SubOption) subConfig {
	sc := subConfig{buffer: 64}
	for _, o := range opts {
		o(&sc)
	}
	return sc
}

// Subscribe calls handler for every message of stream, in order per
// partition, one at a time, on a library thread. The handler runs before
// the message is auto-committed, so a group gets at-least-once processing;
// while it runs no further message is delivered (backpressure). It may call
// any Client method and may call Unsubscribe on its own subscription. ctx
// bounds only the setup; the subscription lasts until Unsubscribe or Close.
func (c *Client) Subscribe(ctx context.Context, stream string, handler func(*Message), opts ...SubOption) (*Subscription, error) {
	if handler == nil {
		return nil, goError("subscribe", ErrInvalidArgument, "nil handler")
	}
	sc := buildSub(opts)
	s := newSubscription(c)
	s.onMessage = handler
	if err := c.subscribe(ctx, stream, &sc, s); err != nil {
		return nil, err
	}
	return s, nil
}

// SubscribeChan is Subscribe delivering into a channel of capacity
// WithBuffer (default 64). The channel is closed after Unsubscribe or Close.
// When the channel is full the dispatcher waits for the reader. With a
// group and auto-commit a message is committed once it is in the channel;
// a message whose send was cut short by Unsubscribe is not committed.
func (c *Client) SubscribeChan(ctx context.Context, stream string, opts ...SubOption) (*Subscription, <-chan *Message, error) {
	sc := buildSub(opts)
	if sc.buffer < 0 {
		return nil, nil, goError("subscribe", ErrInvalidArgument, "negative buffer")
	}
	ch := make(chan *Message, sc.buffer)
	s := newSubscription(c)
	s.msgs = ch
	if sc.group != "" && (sc.autoCommit == nil || *sc.autoCommit) {
		// Commit from the Go side only after the hand-off succeeded.
		off := false
		sc.autoCommit = &off
		s.commitGroup = sc.group
	}
	if err := c.subscribe(ctx, stream, &sc, s); err != nil {
		return nil, nil, err
	}
	return s, ch, nil
}

func (c *Client) subscribe(ctx context.Context, stream string, sc *subConfig, s *Subscription) error {
	const op = "subscribe"
	if err := firstErr(checkString(op, "stream", stream), checkString(op, "group", sc.group)); err != nil {
		return err
	}
	return s.start(ctx, op, func(p *C.fm_client, h cgo.Handle, out **C.fm_subscription) error {
		copts, err := newOptions(op, sc.options())
		if err != nil {
			return err
		}
		defer C.fm_options_free(copts)
		cs := C.CString(stream)
		defer C.free(unsafe.Pointer(cs))
		return call(op, func() C.fm_status { return C.fmgo_subscribe(p, cs, copts, C.uintptr_t(h), out) })
	})
}
