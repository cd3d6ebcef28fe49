package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/granary-rt/granary/codegen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the command without the process: it parses args, generates and
// writes (or checks) the files, and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("granary-gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := fs.Bool("check", false, "write nothing; report generated files that are missing, stale or orphaned, and exit 1 if there are any")
	tags := fs.String("tags", "", "comma-separated list of build tags to apply when loading packages")
	verbose := fs.Bool("v", false, "print the files written or removed")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: granary-gen [flags] [packages]\n\n")
		fmt.Fprintf(stderr, "Generates grain references, registration functions and dispatchers for the\n")
		fmt.Fprintf(stderr, "interfaces marked //granary:grain in packages (default \".\").\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}

	cfg := &codegen.Config{}
	if *tags != "" {
		cfg.BuildFlags = []string{"-tags=" + *tags}
	}
	files, err := codegen.Generate(ctx, cfg, fs.Args()...)
	if err != nil {
		printError(stderr, err)
		return 1
	}

	status := 0
	for _, f := range files {
		if *check {
			stale, err := f.Stale()
			switch {
			case err != nil:
				printError(stderr, err)
				status = 1
			case stale && f.Orphan():
				fmt.Fprintf(stderr, "%s: orphaned generated file: its source declares no grain interface; run granary-gen\n", rel(f.Path))
				status = 1
			case stale:
				fmt.Fprintf(stderr, "%s: generated file is missing or stale; run granary-gen\n", rel(f.Path))
				status = 1
			}
			continue
		}
		changed, err := f.Write()
		if err != nil {
			printError(stderr, err)
			status = 1
			continue
		}
		if changed && *verbose {
			if f.Orphan() {
				fmt.Fprintf(stdout, "removed %s\n", rel(f.Path))
			} else {
				fmt.Fprintf(stdout, "wrote %s\n", rel(f.Path))
			}
		}
	}
	return status
}

// printError prints err one problem a line, as file:line: message with
// file relative to the current directory when it is below it.
func printError(w io.Writer, err error) {
	var list codegen.ErrorList
	if !errors.As(err, &list) {
		fmt.Fprintf(w, "granary-gen: %v\n", err)
		return
	}
	for _, e := range list {
		if e.Pos.Filename == "" {
			fmt.Fprintf(w, "granary-gen: %s\n", e.Msg)
			continue
		}
		fmt.Fprintf(w, "%s:%d: %s\n", rel(e.Pos.Filename), e.Pos.Line, e.Msg)
	}
}

// rel returns path relative to the current directory if it is below it.
func rel(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	r, err := filepath.Rel(wd, path)
	if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
		return path
	}
	return r
}
