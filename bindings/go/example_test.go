package flowmesh_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	flowmesh "github.com/flowmesh/flowmesh/bindings/go"
)

func Example() {
	ctx := context.Background()
	c, err := flowmesh.Connect(ctx, "mem://") // or "file:///var/lib/app/fm", "grpc://host:50051"
	if err != nil {
		panic(err)
	}
	defer c.Close()

	pos, err := c.Publish(ctx, "orders", []byte(`{"id":1}`), flowmesh.WithHeader("type", "created"))
	if err != nil {
		panic(err)
	}
	msgs, err := c.Read(ctx, "orders", pos.Partition, pos.Offset, 10)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(msgs), string(msgs[0].Payload), msgs[0].Headers["type"])
	// Output: 1 {"id":1} created
}

func ExampleClient_Subscribe() {
	ctx := context.Background()
	c, _ := flowmesh.Connect(ctx, "mem://")
	defer c.Close()

	for _, p := range []string{"a", "b", "c"} {
		c.Publish(ctx, "events", []byte(p))
	}
	got := make(chan string, 3)
	sub, err := c.Subscribe(ctx, "events", func(m *flowmesh.Message) {
		got <- fmt.Sprintf("%d:%s", m.Offset, m.Payload)
	}, flowmesh.WithGroup("mailer")) // a new group starts at the earliest message
	if err != nil {
		panic(err)
	}
	for i := 0; i < 3; i++ {
		fmt.Println(<-got)
	}
	sub.Unsubscribe()
	// Output:
	// 0:a
	// 1:b
	// 2:c
}

func ExampleClient_SubscribeChan() {
	ctx := context.Background()
	c, _ := flowmesh.Connect(ctx, "mem://")
	defer c.Close()

	sub, msgs, _ := c.SubscribeChan(ctx, "metrics", flowmesh.StartEarliest(), flowmesh.WithBuffer(16))
	c.Publish(ctx, "metrics", []byte("cpu=42"))
	m := <-msgs
	fmt.Println(string(m.Payload))
	sub.Unsubscribe() // closes msgs
	_, open := <-msgs
	fmt.Println(open)
	// Output:
	// cpu=42
	// false
}

func ExampleClient_Reserve() {
	ctx := context.Background()
	c, _ := flowmesh.Connect(ctx, "mem://")
	defer c.Close()

	c.Enqueue(ctx, "emails", []byte("low"), flowmesh.WithPriority(1))
	c.Enqueue(ctx, "emails", []byte("urgent"), flowmesh.WithPriority(9))

	// Wait up to a second for a job; nobody else sees it for 30 seconds.
	job, err := c.Reserve(ctx, "emails", 30*time.Second, time.Second)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(job.Payload), job.Attempt)
	job.Ack(ctx)

	st, _ := c.Stats(ctx, "emails")
	fmt.Printf("pending=%d in_flight=%d\n", st.Pending, st.InFlight)
	// Output:
	// urgent 1
	// pending=1 in_flight=0
}

func ExampleClient_CAS() {
	ctx := context.Background()
	c, _ := flowmesh.Connect(ctx, "mem://")
	defer c.Close()

	rev, _ := c.CAS(ctx, "locks", "leader", []byte("node-1"), 0) // 0: must not exist yet
	_, err := c.CAS(ctx, "locks", "leader", []byte("node-2"), 0)
	fmt.Println(errors.Is(err, flowmesh.ErrConflict))
	_, err = c.CAS(ctx, "locks", "leader", []byte("node-2"), rev)
	fmt.Println(err)
	v, _ := c.Get(ctx, "locks", "leader")
	fmt.Println(string(v))
	// Output:
	// true
	// <nil>
	// node-2
}

func ExampleClient_Set() {
	ctx := context.Background()
	c, _ := flowmesh.Connect(ctx, "mem://")
	defer c.Close()

	c.Set(ctx, "sessions", "abc", []byte("alice"), flowmesh.WithTTL(time.Hour))
	v, _ := c.Get(ctx, "sessions", "abc")
	fmt.Println(string(v))
	_, err := c.Get(ctx, "sessions", "nope")
	fmt.Println(errors.Is(err, flowmesh.ErrNotFound))
	// Output:
	// alice
	// true
}

func ExampleClient_Watch() {
	ctx := context.Background()
	c, _ := flowmesh.Connect(ctx, "mem://")
	defer c.Close()

	events := make(chan flowmesh.KVEvent, 4)
	w, _ := c.Watch(ctx, "config", "feature.", func(ev flowmesh.KVEvent) { events <- ev })
	c.Set(ctx, "config", "feature.dark", []byte("on"))
	c.Delete(ctx, "config", "feature.dark")
	for i := 0; i < 2; i++ {
		ev := <-events
		fmt.Println(ev.Op, ev.Key)
	}
	w.Unsubscribe()
	// Output:
	// put feature.dark
	// delete feature.dark
}

func ExampleConnect_timeout() {
	// Every blocking call honours its context.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	c, _ := flowmesh.Connect(context.Background(), "mem://")
	defer c.Close()
	_, err := c.Reserve(ctx, "empty", time.Minute, 10*time.Second)
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output: true
}

func ExampleClient_OnState() {
	ctx := context.Background()
	c, err := flowmesh.Connect(ctx, "mem://", // a broker URL in real use
		flowmesh.WithHeartbeat(time.Second), flowmesh.WithOption("max_reconnect_attempts", "10"))
	if err != nil {
		panic(err)
	}
	changes := make(chan flowmesh.StateChange, 16) // never block the listener for long
	c.OnState(func(ch flowmesh.StateChange) { changes <- ch })
	fmt.Println((<-changes).State, c.State())
	c.Close() // the listener's last call is StateClosed, before Close returns
	fmt.Println((<-changes).State)
	// Output:
	// connected connected
	// closed
}
