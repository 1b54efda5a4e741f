package flowmesh

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPublishRead(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("orders")
		before := time.Now().Add(-time.Second)
		p0 := must(c.Publish(ctx, s, []byte("one"), WithKey([]byte("k1")), WithHeader("h", "v"))).get(t)
		p1 := must(c.Publish(ctx, s, []byte("two"))).get(t)
		p2 := must(c.Publish(ctx, s, nil)).get(t) // empty payload is valid
		if p0.Partition != 0 || p1.Offset != p0.Offset+1 || p2.Offset != p1.Offset+1 {
			t.Fatalf("positions %v %v %v", p0, p1, p2)
		}
		msgs := must(c.Read(ctx, s, 0, p0.Offset, 10)).get(t)
		if len(msgs) != 3 {
			t.Fatalf("read %d messages, want 3", len(msgs))
		}
		m := msgs[0]
		if string(m.Payload) != "one" || string(m.Key) != "k1" || m.Headers["h"] != "v" || m.Offset != p0.Offset {
			t.Fatalf("first message %+v", m)
		}
		if m.Timestamp.Before(before) || m.Timestamp.After(time.Now().Add(time.Second)) {
			t.Fatalf("timestamp %v not near now", m.Timestamp)
		}
		if m.Stream == "" {
			t.Fatal("message has no stream name")
		}
		if msgs[1].Key != nil || string(msgs[1].Payload) != "two" || len(msgs[2].Payload) != 0 {
			t.Fatalf("messages %+v %+v", msgs[1], msgs[2])
		}
		part := must(c.Read(ctx, s, 0, p1.Offset, 1)).get(t)
		if len(part) != 1 || string(part[0].Payload) != "two" {
			t.Fatalf("read from offset: %+v", part)
		}
		latest := must(c.LatestOffset(ctx, s, 0)).get(t)
		if latest != p2.Offset+1 {
			t.Fatalf("latest offset %d, want %d", latest, p2.Offset+1)
		}
	})
}

func TestPublishBatch(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("batch")
		msgs := make([]Message, 50)
		for i := range msgs {
			msgs[i] = Message{Payload: []byte(fmt.Sprint(i)), Headers: map[string]string{"i": fmt.Sprint(i)}}
		}
		pos := must(c.PublishBatch(ctx, s, msgs)).get(t)
		if len(pos) != len(msgs) {
			t.Fatalf("%d positions for %d messages", len(pos), len(msgs))
		}
		for i := 1; i < len(pos); i++ {
			if pos[i].Offset != pos[i-1].Offset+1 {
				t.Fatalf("positions not contiguous: %v", pos)
			}
		}
		got := must(c.Read(ctx, s, 0, pos[0].Offset, 100)).get(t)
		if len(got) != 50 {
			t.Fatalf("read %d", len(got))
		}
		for i, m := range got {
			if string(m.Payload) != fmt.Sprint(i) || m.Headers["i"] != fmt.Sprint(i) {
				t.Fatalf("message %d: %+v", i, m)
			}
		}
		empty := must(c.PublishBatch(ctx, s, nil)).get(t)
		if len(empty) != 0 {
			t.Fatal("empty batch returned positions")
		}
	})
}

func TestPublishAsyncFlush(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("async")
		var fs []*PublishFuture
		for i := 0; i < 200; i++ {
			fs = append(fs, must(c.PublishAsync(ctx, s, []byte(fmt.Sprint(i)))).get(t))
		}
		ok(t, c.Flush(ctx))
		seen := map[uint64]bool{}
		for i, f := range fs {
			select {
			case <-f.Done():
			default:
				t.Fatalf("future %d not done after Flush", i)
			}
			p, err := f.Result()
			if err != nil {
				t.Fatalf("future %d: %v", i, err)
			}
			if seen[p.Offset] {
				t.Fatalf("offset %d twice", p.Offset)
			}
			seen[p.Offset] = true
		}
		msgs := must(c.Read(ctx, s, 0, 0, 1000)).get(t)
		if len(msgs) != 200 {
			t.Fatalf("read %d, want 200", len(msgs))
		}
		p, err := fs[0].Wait(ctx)
		if err != nil || string(msgs[p.Offset].Payload) != "0" {
			t.Fatalf("Wait: %v %v", p, err)
		}
	})
}

func TestCreateStreamPartitions(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("parts")
		if _, err := c.Partitions(ctx, s); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Partitions of missing stream: %v", err)
		}
		ok(t, c.CreateStream(ctx, s, WithPartitions(4)))
		ok(t, c.CreateStream(ctx, s, WithPartitions(4))) // same count: fine
		if err := c.CreateStream(ctx, s, WithPartitions(2)); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("different partition count: %v", err)
		}
		if n := must(c.Partitions(ctx, s)).get(t); n != 4 {
			t.Fatalf("partitions %d", n)
		}
		// The same key always lands on the same partition.
		a := must(c.Publish(ctx, s, []byte("x"), WithKey([]byte("user-1")))).get(t)
		b := must(c.Publish(ctx, s, []byte("y"), WithKey([]byte("user-1")))).get(t)
		if a.Partition != b.Partition || a.Partition >= 4 {
			t.Fatalf("key routing %v %v", a, b)
		}
		ok(t, c.CreateStream(ctx, uniq("ret"), WithMaxAge(time.Hour), WithMaxBytes(1<<20), WithMaxMessages(100)))
	})
}

func TestSubscribeHandler(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("sub")
		for i := 0; i < 5; i++ {
			must(c.Publish(ctx, s, []byte(fmt.Sprint(i)))).get(t)
		}
		var mu sync.Mutex
		var got []string
		sub := must(c.Subscribe(ctx, s, func(m *Message) {
			mu.Lock()
			got = append(got, string(m.Payload))
			mu.Unlock()
		}, StartEarliest())).get(t)
		for i := 5; i < 10; i++ {
			must(c.Publish(ctx, s, []byte(fmt.Sprint(i)))).get(t)
		}
		eventually(t, 10*time.Second, "10 messages", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) >= 10
		})
		ok(t, sub.Unsubscribe())
		ok(t, sub.Unsubscribe()) // idempotent
		select {
		case <-sub.Done():
		default:
			t.Fatal("Done not closed after Unsubscribe")
		}
		mu.Lock()
		for i, p := range got {
			if p != fmt.Sprint(i) {
				t.Fatalf("order: %v", got)
			}
		}
		n := len(got)
		mu.Unlock()
		must(c.Publish(ctx, s, []byte("late"))).get(t)
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if len(got) != n {
			t.Fatal("handler ran after Unsubscribe returned")
		}
	})
}

func TestSubscribeStartLatest(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("latest")
		must(c.Publish(ctx, s, []byte("old"))).get(t)
		sub, ch := must2(t)(c.SubscribeChan(ctx, s)) // default without group: latest
		defer sub.Unsubscribe()
		must(c.Publish(ctx, s, []byte("new"))).get(t)
		m := recv(t, ch)
		if string(m.Payload) != "new" {
			t.Fatalf("got %q, want only messages after subscribing", m.Payload)
		}
		sub2, ch2 := must2(t)(c.SubscribeChan(ctx, s, StartAt(1)))
		defer sub2.Unsubscribe()
		if m := recv(t, ch2); string(m.Payload) != "new" || m.Offset != 1 {
			t.Fatalf("StartAt(1): %+v", m)
		}
	})
}

func must2(t *testing.T) func(*Subscription, <-chan *Message, error) (*Subscription, <-chan *Message) {
	return func(s *Subscription, ch <-chan *Message, err error) (*Subscription, <-chan *Message) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s, ch
	}
}

func recv(t *testing.T, ch <-chan *Message) *Message {
	t.Helper()
	select {
	case m, open := <-ch:
		if !open {
			t.Fatal("channel closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

func TestConsumerGroupCommit(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("grp")
		if _, err := c.GetOffset(ctx, s, "g1", 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetOffset before any commit: %v", err)
		}
		for i := 0; i < 6; i++ {
			must(c.Publish(ctx, s, []byte(fmt.Sprint(i)))).get(t)
		}
		// Handler subscription: auto-commit after each handler call.
		seen := make(chan uint64, 10)
		sub := must(c.Subscribe(ctx, s, func(m *Message) { seen <- m.Offset }, WithGroup("g1"))).get(t)
		for i := 0; i < 6; i++ {
			select {
			case off := <-seen:
				if off != uint64(i) {
					t.Fatalf("offset %d, want %d", off, i)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("group did not start at earliest with nothing committed")
			}
		}
		eventually(t, 5*time.Second, "auto-commit of offset 5", func() bool {
			off, err := c.GetOffset(ctx, s, "g1", 0)
			return err == nil && off == 5
		})
		ok(t, sub.Unsubscribe())

		// Manual commit, then a new member resumes after it.
		ok(t, c.CommitOffset(ctx, s, "g1", 0, 2))
		if off := must(c.GetOffset(ctx, s, "g1", 0)).get(t); off != 2 {
			t.Fatalf("GetOffset %d", off)
		}
		sub2, ch := must2(t)(c.SubscribeChan(ctx, s, WithGroup("g1")))
		if m := recv(t, ch); m.Offset != 3 {
			t.Fatalf("resumed at %d, want 3", m.Offset)
		}
		recv(t, ch)
		recv(t, ch)
		// SubscribeChan commits after the hand-off into the channel.
		eventually(t, 5*time.Second, "commit of offset 5 via channel", func() bool {
			off, err := c.GetOffset(ctx, s, "g1", 0)
			return err == nil && off == 5
		})
		ok(t, sub2.Unsubscribe())
		if _, open := <-ch; open {
			t.Fatal("channel still open after Unsubscribe")
		}

		// auto_commit=false leaves the offset alone.
		must(c.Publish(ctx, s, []byte("6"))).get(t)
		sub3, ch3 := must2(t)(c.SubscribeChan(ctx, s, WithGroup("g1"), WithAutoCommit(false)))
		if m := recv(t, ch3); m.Offset != 6 {
			t.Fatalf("offset %d", m.Offset)
		}
		ok(t, sub3.Unsubscribe())
		if off := must(c.GetOffset(ctx, s, "g1", 0)).get(t); off != 5 {
			t.Fatalf("offset moved to %d without auto-commit", off)
		}
	})
}

// A handler may unsubscribe itself; no message arrives after that.
func TestUnsubscribeInsideHandler(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("self")
		var mu sync.Mutex
		count := 0
		var sub *Subscription
		ready := make(chan struct{})
		sub = must(c.Subscribe(ctx, s, func(m *Message) {
			<-ready
			mu.Lock()
			count++
			n := count
			mu.Unlock()
			if n == 3 {
				if err := sub.Unsubscribe(); err != nil {
					t.Errorf("Unsubscribe inside handler: %v", err)
				}
			}
		}, StartEarliest())).get(t)
		close(ready)
		for i := 0; i < 10; i++ {
			must(c.Publish(ctx, s, []byte{byte(i)})).get(t)
		}
		select {
		case <-sub.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("subscription not torn down")
		}
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if count != 3 {
			t.Fatalf("handler ran %d times, want 3", count)
		}
	})
}

// A reader that does not keep up holds the dispatcher: the channel never
// grows past its capacity and nothing is lost once the reader resumes.
func TestSubscribeChanBackpressure(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("bp")
		const n = 100
		sub, ch := must2(t)(c.SubscribeChan(ctx, s, StartEarliest(), WithBuffer(2)))
		defer sub.Unsubscribe()
		msgs := make([]Message, n)
		for i := range msgs {
			msgs[i].Payload = []byte(fmt.Sprint(i))
		}
		must(c.PublishBatch(ctx, s, msgs)).get(t)
		eventually(t, 5*time.Second, "full channel", func() bool { return len(ch) == 2 })
		time.Sleep(50 * time.Millisecond)
		if len(ch) != 2 || cap(ch) != 2 {
			t.Fatalf("channel len %d cap %d", len(ch), cap(ch))
		}
		for i := 0; i < n; i++ {
			if m := recv(t, ch); string(m.Payload) != fmt.Sprint(i) {
				t.Fatalf("message %d is %q", i, m.Payload)
			}
		}
	})
}

// Many goroutines publish while a channel subscriber and a handler consume:
// every message arrives exactly once and in order per publisher.
func TestConcurrentPublishConsume(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("conc")
		ok(t, c.CreateStream(ctx, s, WithPartitions(3)))
		const pubs, per = 8, 100
		sub, ch := must2(t)(c.SubscribeChan(ctx, s, StartEarliest(), WithBuffer(16)))
		defer sub.Unsubscribe()
		var hmu sync.Mutex
		handlerSeen := map[string]bool{}
		hsub := must(c.Subscribe(ctx, s, func(m *Message) {
			hmu.Lock()
			handlerSeen[string(m.Payload)] = true
			hmu.Unlock()
		}, StartEarliest())).get(t)
		defer hsub.Unsubscribe()

		var wg sync.WaitGroup
		for p := 0; p < pubs; p++ {
			wg.Add(1)
			go func(p int) {
				defer wg.Done()
				key := []byte(fmt.Sprint("pub", p))
				for i := 0; i < per; i++ {
					var err error
					if i%2 == 0 {
						_, err = c.Publish(ctx, s, []byte(fmt.Sprintf("%d/%d", p, i)), WithKey(key))
					} else {
						var f *PublishFuture
						f, err = c.PublishAsync(ctx, s, []byte(fmt.Sprintf("%d/%d", p, i)), WithKey(key))
						if err == nil {
							_, err = f.Wait(ctx)
						}
					}
					if err != nil {
						t.Errorf("publish: %v", err)
						return
					}
				}
			}(p)
		}
		last := map[int]int{}
		seen := map[string]bool{}
		for len(seen) < pubs*per {
			m := recv(t, ch)
			var p, i int
			fmt.Sscanf(string(m.Payload), "%d/%d", &p, &i)
			if seen[string(m.Payload)] {
				t.Fatalf("duplicate %s", m.Payload)
			}
			seen[string(m.Payload)] = true
			if prev, okk := last[p]; okk && i <= prev {
				t.Fatalf("publisher %d: %d after %d", p, i, prev)
			}
			last[p] = i
		}
		wg.Wait()
		eventually(t, 10*time.Second, "handler saw all", func() bool {
			hmu.Lock()
			defer hmu.Unlock()
			return len(handlerSeen) == pubs*per
		})
	})
}

// A file:// engine keeps streams, offsets, jobs and keys across clients.
func TestFileDurability(t *testing.T) {
	dir := t.TempDir()
	url := "file://" + dir
	ctx := ctxT(t)
	c := must(Connect(ctx, url)).get(t)
	must(c.Publish(ctx, "log", []byte("persist"))).get(t)
	ok(t, c.CommitOffset(ctx, "log", "g", 0, 0))
	must(c.Set(ctx, "b", "k", []byte("v"))).get(t)
	must(c.Enqueue(ctx, "q", []byte("job"))).get(t)
	ok(t, c.Close())

	c2 := connect(t, url)
	msgs := must(c2.Read(ctx, "log", 0, 0, 10)).get(t)
	if len(msgs) != 1 || !bytes.Equal(msgs[0].Payload, []byte("persist")) {
		t.Fatalf("after reopen: %+v", msgs)
	}
	if off := must(c2.GetOffset(ctx, "log", "g", 0)).get(t); off != 0 {
		t.Fatalf("offset %d", off)
	}
	if v := must(c2.Get(ctx, "b", "k")).get(t); string(v) != "v" {
		t.Fatalf("kv %q", v)
	}
	j := must(c2.Reserve(ctx, "q", time.Minute, time.Second)).get(t)
	if string(j.Payload) != "job" {
		t.Fatalf("job %q", j.Payload)
	}
}

// A subscription to a durable broker resumes after the broker restarts:
// nothing lost, nothing repeated, order kept.
func TestSubscriptionAcrossBrokerRestart(t *testing.T) {
	if brokerURL == "" {
		t.Skip("remote engine: " + brokerSkip)
	}
	data := "file://" + t.TempDir()
	url, stop, err := spawnBroker("", data)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	c := connect(t, url, WithRequestTimeout(2*time.Second), WithConnectTimeout(time.Second))
	sub, ch := must2(t)(c.SubscribeChan(ctx, "restart", StartEarliest(), WithBuffer(100)))
	defer sub.Unsubscribe()
	for i := 0; i < 5; i++ {
		must(c.Publish(ctx, "restart", []byte(fmt.Sprint(i)))).get(t)
	}
	for i := 0; i < 5; i++ {
		if m := recv(t, ch); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("before restart: message %d is %q", i, m.Payload)
		}
	}
	stop()
	_, stop2, err := spawnBroker(strings.TrimPrefix(url, "grpc://"), data)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	for i := 5; i < 10; i++ {
		eventually(t, 10*time.Second, "publish after restart", func() bool {
			_, err := c.Publish(ctx, "restart", []byte(fmt.Sprint(i)))
			return err == nil
		})
	}
	if msgs := must(c.Read(ctx, "restart", 0, 0, 100)).get(t); len(msgs) != 10 {
		t.Fatalf("broker holds %d messages after restart, want 10", len(msgs))
	}
	for i := 5; i < 10; i++ {
		select {
		case m := <-ch:
			if string(m.Payload) != fmt.Sprint(i) {
				t.Fatalf("after restart: message %d is %q (offset %d)", i, m.Payload, m.Offset)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("subscription did not resume after the broker restart (message %d missing)", i)
		}
	}
	// Nothing is delivered twice: the resumed feed starts after offset 9.
	select {
	case m := <-ch:
		t.Fatalf("extra delivery after restart: %q at offset %d", m.Payload, m.Offset)
	case <-time.After(300 * time.Millisecond):
	}
	if err := sub.Err(); err != nil {
		t.Fatalf("subscription reports %v after a successful resume", err)
	}
}

// Unsubscribe from several goroutines while Close runs and messages flow:
// no deadlock, no double free, every channel closed.
func TestUnsubscribeRacingClose(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("racy")
		var subs []*Subscription
		var chans []<-chan *Message
		for i := 0; i < 4; i++ {
			sub, ch := must2(t)(c.SubscribeChan(ctx, s, StartEarliest(), WithBuffer(1)))
			subs, chans = append(subs, sub), append(chans, ch)
			subs = append(subs, must(c.Subscribe(ctx, s, func(*Message) {}, StartEarliest())).get(t))
		}
		for i := 0; i < 50; i++ {
			must(c.PublishAsync(ctx, s, []byte("x"))).get(t)
		}
		var wg sync.WaitGroup
		for _, sub := range subs {
			for k := 0; k < 2; k++ {
				wg.Add(1)
				go func(sub *Subscription) {
					defer wg.Done()
					_ = sub.Unsubscribe()
				}(sub)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close()
		}()
		wg.Wait()
		for _, sub := range subs {
			select {
			case <-sub.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("subscription not torn down")
			}
		}
		for _, ch := range chans {
			for range ch {
			}
		}
	})
}

// A remote client that may reconnect only once gives up when its broker
// dies: channel subscriptions and watches close their channel, handler
// subscriptions end, and Err says ErrDisconnected. Messages delivered
// before the loss all arrive first.
func TestFeedErrorAfterBrokerLoss(t *testing.T) {
	if brokerURL == "" {
		t.Skip("remote engine: " + brokerSkip)
	}
	url, stop, err := spawnBroker("", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := ctxT(t)
	c := connect(t, url, WithRequestTimeout(2*time.Second), WithConnectTimeout(time.Second),
		WithOption("max_reconnect_attempts", "1"), WithOption("reconnect_initial_ms", "50"),
		WithOption("reconnect_jitter_ms", "0"))
	s := uniq("dead")
	sub, ch := must2(t)(c.SubscribeChan(ctx, s, StartEarliest()))
	gsub, gch := must2(t)(c.SubscribeChan(ctx, s, StartEarliest(), WithGroup("g")))
	var mu sync.Mutex
	handled := 0
	hsub := must(c.Subscribe(ctx, s, func(*Message) {
		mu.Lock()
		handled++
		mu.Unlock()
	}, StartEarliest())).get(t)
	wsub, wch, err := c.WatchChan(ctx, "deadkv", "", 0)
	ok(t, err)
	for i := 0; i < 3; i++ {
		must(c.Publish(ctx, s, []byte(fmt.Sprint(i)))).get(t)
	}
	must(c.Set(ctx, "deadkv", "k", []byte("v"))).get(t)
	eventually(t, 5*time.Second, "handler saw 3", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled == 3
	})
	if sub.Err() != nil || hsub.Err() != nil {
		t.Fatal("Err not nil on a healthy subscription")
	}
	stop()

	drain := func(name string, ch <-chan *Message, sub *Subscription) {
		t.Helper()
		n := 0
		deadline := time.After(15 * time.Second)
		for open := true; open; {
			select {
			case _, open = <-ch:
				if open {
					n++
				}
			case <-deadline:
				t.Fatalf("%s: channel not closed after the broker died", name)
			}
		}
		if n != 3 {
			t.Fatalf("%s: %d messages before close, want 3", name, n)
		}
		if err := sub.Err(); !errors.Is(err, ErrDisconnected) {
			t.Fatalf("%s: Err() = %v, want ErrDisconnected", name, err)
		}
	}
	drain("SubscribeChan", ch, sub)
	drain("SubscribeChan with group", gch, gsub)
	select {
	case <-hsub.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("handler subscription not ended after the broker died")
	}
	if err := hsub.Err(); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("handler: Err() = %v, want ErrDisconnected", err)
	}
	for range wch {
	}
	if err := wsub.Err(); err == nil {
		t.Fatal("watch: channel closed but Err() is nil")
	} else {
		t.Logf("watch ended with: %v", err)
	}
	ok(t, sub.Unsubscribe()) // no-op after the feed ended
	ok(t, c.Close())
	if sub.Err() == nil {
		t.Fatal("Close cleared Err")
	}
}
