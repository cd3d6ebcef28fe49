package codegen

import (
	"errors"
	"go/token"
	"strings"
	"testing"
)

func TestLowerCamel(t *testing.T) {
	for in, want := range map[string]string{
		"Greeter":     "greeter",
		"A":           "a",
		"ID":          "id",
		"URL":         "url",
		"HTTPServer":  "httpServer",
		"HTTP2Server": "http2Server",
		"IOReader":    "ioReader",
		"ÄpfelBaum":   "äpfelBaum",
	} {
		if got := lowerCamel(in); got != want {
			t.Errorf("lowerCamel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseErrorPos(t *testing.T) {
	for in, want := range map[string]token.Position{
		"/a/b.go:12:5": {Filename: "/a/b.go", Line: 12, Column: 5},
		"/a/b.go:12":   {Filename: "/a/b.go", Line: 12},
		"b.go":         {Filename: "b.go"},
		"-":            {},
		"":             {},
	} {
		if got := parseErrorPos(in); got != want {
			t.Errorf("parseErrorPos(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestErrorList(t *testing.T) {
	list := sortErrors(ErrorList{
		{Pos: token.Position{Filename: "b.go", Line: 3}, Msg: "second", Err: ErrInvalid},
		{Pos: token.Position{Filename: "a.go", Line: 9}, Msg: "first", Err: ErrInvalid},
		{Pos: token.Position{Filename: "b.go", Line: 3}, Msg: "second", Err: ErrInvalid},
		{Msg: "no position"},
	})
	if got, want := list.Error(), "no position\na.go:9: first\nb.go:3: second"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = list
	if !errors.Is(err, ErrInvalid) {
		t.Error("errors.Is(list, ErrInvalid) = false")
	}
	var e *Error
	if !errors.As(err, &e) || e.Msg != "no position" {
		t.Errorf("errors.As found %v", e)
	}
}

func TestFormatError(t *testing.T) {
	src := "package p\n\nfunc f() {\n\treturn 1 +\n}\n"
	_, err := renderFormat([]byte(src), "/x/p_granary.go")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want an *Error", err)
	}
	if e.Pos.Filename != "/x/p_granary.go" || e.Pos.Line != 5 {
		t.Errorf("position %v, want /x/p_granary.go:5", e.Pos)
	}
	if !errors.Is(err, errFormat) || !strings.Contains(e.Msg, `(line is "}")`) {
		t.Errorf("error %q does not match errFormat or quote the line", err)
	}
}
