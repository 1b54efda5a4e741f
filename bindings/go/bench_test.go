package flowmesh

import (
	"context"
	"testing"
)

func BenchmarkPublish(b *testing.B) {
	ctx := context.Background()
	c, err := Connect(ctx, "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 128)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Publish(ctx, "bench", payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublishAsync(b *testing.B) {
	ctx := context.Background()
	c, err := Connect(ctx, "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 128)
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.PublishAsync(ctx, "bench", payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkKVGet(b *testing.B) {
	ctx := context.Background()
	c, err := Connect(ctx, "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Set(ctx, "bench", "key", make([]byte, 128)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Get(ctx, "bench", "key"); err != nil {
			b.Fatal(err)
		}
	}
}

// The same Get with a cancellable context, which runs the native call on a
// helper goroutine; the difference is the price of cancellation.
func BenchmarkKVGetWithDeadline(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := Connect(ctx, "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Set(ctx, "bench", "key", make([]byte, 128)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Get(ctx, "bench", "key"); err != nil {
			b.Fatal(err)
		}
	}
}

// Delivery through a handler: publish b.N messages, wait until all arrived.
func BenchmarkSubscribeHandler(b *testing.B) {
	ctx := context.Background()
	c, err := Connect(ctx, "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	n := 0
	sub, err := c.Subscribe(ctx, "bench", func(*Message) {
		if n++; n == b.N {
			close(done)
		}
	}, StartEarliest())
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	payload := make([]byte, 128)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.PublishAsync(ctx, "bench", payload); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

// Delivery through a channel of 256.
func BenchmarkSubscribeChan(b *testing.B) {
	ctx := context.Background()
	c, err := Connect(ctx, "mem://")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	sub, ch, err := c.SubscribeChan(ctx, "bench", StartEarliest(), WithBuffer(256))
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	payload := make([]byte, 128)
	b.ResetTimer()
	go func() {
		for i := 0; i < b.N; i++ {
			if _, err := c.PublishAsync(ctx, "bench", payload); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	for i := 0; i < b.N; i++ {
		<-ch
	}
}

// prefill publishes n messages of 128 bytes to stream before timing.
func prefill(b *testing.B, c *Client, stream string, n int) {
	b.Helper()
	msgs := make([]Message, 1000)
	for i := range msgs {
		msgs[i].Payload = make([]byte, 128)
	}
	for n > 0 {
		k := min(n, len(msgs))
		if _, err := c.PublishBatch(context.Background(), stream, msgs[:k]); err != nil {
			b.Fatal(err)
		}
		n -= k
	}
}

// Delivery only (messages published before the timer starts), through the
// callback path (one C->Go callback per message); bench/bindings/go/pull
// compares it with pull batches.
func BenchmarkDeliverChan(b *testing.B) {
	run := func(b *testing.B, open func(c *Client) (func(), <-chan *Message)) {
		ctx := context.Background()
		c, err := Connect(ctx, "mem://")
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		prefill(b, c, "bench", b.N)
		b.ResetTimer()
		stop, ch := open(c)
		defer stop()
		for i := 0; i < b.N; i++ {
			<-ch
		}
	}
	b.Run("callback", func(b *testing.B) {
		run(b, func(c *Client) (func(), <-chan *Message) {
			sub, ch, err := c.SubscribeChan(context.Background(), "bench", StartEarliest(), WithBuffer(256))
			if err != nil {
				b.Fatal(err)
			}
			return func() { sub.Unsubscribe() }, ch
		})
	})
}
