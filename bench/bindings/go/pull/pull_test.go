package pull

import (
	"context"
	"fmt"
	"testing"

	flowmesh "github.com/flowmesh/flowmesh/bindings/go"
)

func prefill(b *testing.B, c *flowmesh.Client, stream string, n int) {
	b.Helper()
	payload := make([]byte, 128)
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if _, err := c.Publish(ctx, stream, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeliver: messages taken from one partition, per message.
func BenchmarkDeliver(b *testing.B) {
	round := 0
	open := func(b *testing.B) (*flowmesh.Client, string, string) {
		round++
		url := fmt.Sprintf("mem://bench-pull-%d", round)
		c, err := flowmesh.Connect(context.Background(), url)
		if err != nil {
			b.Fatal(err)
		}
		prefill(b, c, "bench", b.N)
		return c, url, "bench"
	}
	b.Run("callback", func(b *testing.B) {
		c, _, stream := open(b)
		defer c.Close()
		b.ResetTimer()
		sub, ch, err := c.SubscribeChan(context.Background(), stream, flowmesh.StartEarliest(), flowmesh.WithBuffer(256))
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Unsubscribe()
		for i := 0; i < b.N; i++ {
			<-ch
		}
	})
	for _, batch := range []int{1, 64, 256} {
		b.Run(fmt.Sprint("pull-batch=", batch), func(b *testing.B) {
			c, url, stream := open(b) // keeps the named engine alive
			defer c.Close()
			b.ResetTimer()
			if err := drain(url, stream, batch, b.N); err != nil {
				b.Fatal(err)
			}
		})
	}
}
