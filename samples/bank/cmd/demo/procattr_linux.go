package main

import "syscall"

// sysProcAttr makes the kernel kill the child processes if the demo dies
// without cleaning up (kill -9), so that no silo outlives it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
