package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"strconv"
	"strings"
	"time"
)

// Tier is the delivery tier of one Publish.
type Tier int

const (
	// TierPersistent stores the message per the engine's durability (the default).
	TierPersistent Tier = iota
	// TierMemory hands the message to the live subscribers of the stream
	// and stores nothing: no offset, never read back, missed by
	// subscribers that are not connected.
	TierMemory
	// TierReplicated stores the message on a quorum of 3+ servers (nats://
	// on a cluster); ErrUnavailable on an engine that keeps one copy.
	TierReplicated
)

func (t Tier) String() string {
	switch t {
	case TierMemory:
		return "memory"
	case TierReplicated:
		return "replicated"
	default:
		return "persistent"
	}
}

// OffsetNone is the offset of a message that has none: the Position a
// TierMemory publish returns and the Offset of memory-tier messages.
const OffsetNone uint64 = C.FM_OFFSET_NONE

// SubjectHeader carries a message's subject when it has more than one token.
const SubjectHeader = "fm-subject"

// WithTier sets the delivery tier of a Publish.
func WithTier(t Tier) MsgOption {
	return func(c *msgConfig) { c.publish = append(c.publish, [2]string{"tier", t.String()}) }
}

// WithRequireAck makes a TierMemory Publish wait until the engine's server
// took the message (stored tiers always wait).
func WithRequireAck() MsgOption {
	return func(c *msgConfig) { c.publish = append(c.publish, [2]string{"require_ack", "true"}) }
}

// WithPublishTimeout bounds the whole Publish in the library (ErrTimeout beyond).
func WithPublishTimeout(d time.Duration) MsgOption {
	return func(c *msgConfig) {
		c.publish = append(c.publish, [2]string{"timeout_ms", strconv.FormatInt(d.Milliseconds(), 10)})
	}
}

// Subject is the message's subject: its SubjectHeader, else the short name
// of its stream.
func (m *Message) Subject() string {
	if s, ok := m.Headers[SubjectHeader]; ok {
		return s
	}
	return m.Stream[strings.LastIndexByte(m.Stream, '/')+1:]
}

// Live reports a memory-tier message (never stored, Offset is OffsetNone).
func (m *Message) Live() bool { return m.Offset == OffsetNone }
