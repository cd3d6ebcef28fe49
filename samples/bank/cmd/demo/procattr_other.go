//go:build !linux

package main

import "syscall"

// sysProcAttr: only Linux has a parent-death signal; elsewhere the demo
// relies on killing its children before it returns.
func sysProcAttr() *syscall.SysProcAttr { return nil }
