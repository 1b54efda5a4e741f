// A program in its own module that consumes the flowmesh Go module.
package main

import (
	"context"
	"fmt"
	"os"

	flowmesh "github.com/flowmesh/flowmesh/bindings/go"
)

func main() {
	ctx := context.Background()
	c, err := flowmesh.Connect(ctx, "mem://")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	pos, err := c.Publish(ctx, "orders", []byte("from go"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	msgs, err := c.Read(ctx, "orders", pos.Partition, pos.Offset, 1)
	if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != "from go" {
		fmt.Fprintln(os.Stderr, "read back:", msgs, err)
		os.Exit(1)
	}
	fmt.Println("go consumer OK: flowmesh", flowmesh.Version())
}
