package codegen_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log"
	"path/filepath"
	"strings"

	"github.com/granary-rt/granary/codegen"
)

// Generate for the package of testdata/golden/greeter and print the
// generated file's name and exported API.
func ExampleGenerate() {
	files, err := codegen.Generate(context.Background(), nil, "./testdata/golden/greeter")
	if err != nil {
		log.Fatal(err) // an ErrorList: one "file:line: message" per line
	}
	for _, f := range files {
		fmt.Println(filepath.Base(f.Path))
		sc := bufio.NewScanner(bytes.NewReader(f.Content))
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "func ") || strings.HasPrefix(line, "type G") || strings.HasPrefix(line, "var G") {
				fmt.Println(strings.TrimSuffix(line, " {"))
			}
		}
	}
	// Output:
	// greeter_granary.go
	// var GreeterType = grain.NewType("hello.Greeter", greeterGreet, greeterCount, greeterTags, greeterNotify)
	// type GreeterRef struct{ ref grain.Ref }
	// func NewGreeterRef(c grain.Caller, key string) GreeterRef
	// func (r GreeterRef) ID() grain.ID { return r.ref.ID() }
	// func (r GreeterRef) Greet(ctx context.Context, name string) (string, error)
	// func (r GreeterRef) Count(ctx context.Context) (int64, error)
	// func (r GreeterRef) Tags(ctx context.Context, tags []string, n int) (map[string]int, error)
	// func (r GreeterRef) Notify(ctx context.Context, msg string) error
	// func RegisterGreeter(r grain.Registry, f func(grain.Context) Greeter, opts ...grain.TypeOption)
}
