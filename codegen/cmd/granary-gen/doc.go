// Command granary-gen generates the typed references, registration
// functions and dispatchers of Granary grain interfaces: Go interfaces
// whose doc comment holds the directive //granary:grain. Run it from a
// go:generate line in the package that declares them:
//
//	//go:generate go run github.com/granary-rt/granary/codegen/cmd/granary-gen
//
// then "go generate ./...". Usage:
//
//	granary-gen [-check] [-tags list] [-v] [packages]
//
// Packages are go command patterns; the default is ".". For each Go file
// declaring grain interfaces, account.go say, granary-gen writes
// account_granary.go next to it (leaving an unchanged file untouched), and
// it removes generated files whose source no longer declares any. Earlier
// outputs, however stale or broken, never prevent regeneration.
//
// The flags are:
//
//	-check
//		Write nothing. Report each generated file that is missing, stale
//		or orphaned, and exit with status 1 if there is any. For CI.
//	-tags list
//		Comma-separated build tags to apply when loading packages.
//	-v
//		Print the files written and removed.
//
// Problems are printed on standard error, one a line, as
// "file:line: message" (file relative to the current directory), and make
// the command exit with status 1 without writing anything. Usage errors
// exit with status 2.
//
// The directives:
//
//	//granary:grain                  on an interface: generate for it, registered as <package>.<Interface>
//	//granary:grain name=bank.Account  the same, registered under the given name
//	//granary:readonly               on a method: may interleave with other read-only calls
//	//granary:oneway                 on a method returning only error: the caller does not wait
//
// A method's directive is its trailing comment or a line of its doc
// comment. See package github.com/granary-rt/granary/codegen for the rules
// grain interfaces must follow and the code generated.
package main
