package codegen

import (
	"cmp"
	"errors"
	"fmt"
	"go/token"
	"path/filepath"
	"slices"
	"strings"
)

// ErrInvalid is matched (with errors.Is) by every Error that reports a grain
// interface breaking one of the generator's rules, as opposed to a failure
// to load or write packages.
var ErrInvalid = errors.New("codegen: invalid grain interface")

// Error is one problem found while generating, tied to a source position
// when there is one. Its message has the form "file:line: message".
type Error struct {
	// Pos is where the problem is; Filename is empty when there is no
	// position (a package that failed to load, for example).
	Pos token.Position
	// Msg describes the problem.
	Msg string
	// Err is the underlying cause, if any (ErrInvalid for rule violations).
	Err error
}

func (e *Error) Error() string {
	if e.Pos.Filename == "" {
		return e.Msg
	}
	return fmt.Sprintf("%s:%d: %s", e.Pos.Filename, e.Pos.Line, e.Msg)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrorList is the error Generate returns when it found one or more
// problems: every problem, sorted by file and line, one per line.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors of the list, for errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// sortErrors orders errors by file, line, column and message and drops
// exact duplicates.
func sortErrors(l ErrorList) ErrorList {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.Pos.Filename, b.Pos.Filename),
			cmp.Compare(a.Pos.Line, b.Pos.Line),
			cmp.Compare(a.Pos.Column, b.Pos.Column),
			cmp.Compare(a.Msg, b.Msg),
		)
	})
	return slices.CompactFunc(l, func(a, b *Error) bool {
		return a.Pos == b.Pos && a.Msg == b.Msg
	})
}

// errorSink collects positioned errors.
type errorSink struct {
	fset *token.FileSet
	errs ErrorList
}

// invalid records a rule violation at pos.
func (s *errorSink) invalid(pos token.Pos, format string, args ...any) {
	s.errs = append(s.errs, &Error{Pos: s.fset.Position(pos), Msg: fmt.Sprintf(format, args...), Err: ErrInvalid})
}

// relPos prints pos as file:line for a message about from: the file's base
// name when both are in the same directory, its full path otherwise.
func (s *errorSink) relPos(pos, from token.Pos) string {
	p, f := s.fset.Position(pos), s.fset.Position(from)
	name := p.Filename
	if filepath.Dir(name) == filepath.Dir(f.Filename) {
		name = filepath.Base(name)
	}
	return fmt.Sprintf("%s:%d", name, p.Line)
}
