// Command go_storm: goroutines hammering socket and pipe syscalls while rbinder patches Go's
// Syscall6 (docs/fast-path.md, "Patched call sites"), with what makes Go's threads take signals
// and fork on the way: CPU-bound goroutines (the scheduler preempts them with SIGURG), a CPU
// profile (SIGPROF on every thread) and child processes started with os/exec (vfork children run
// Syscall6 on the parent's memory). Every byte must arrive as sent. Runs for SECONDS (long enough
// for rbinder's Node to boot and for the verdict to arrive). Prints "OK <messages>" and exits 0,
// or prints what went wrong and exits 1.
//
//	go_storm [GOROUTINES] [SECONDS]    (GO_STORM_NO_CHILDREN=1: no child processes)
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const size = 64

func arg(i int, def float64) float64 {
	if len(os.Args) > i {
		if v, err := strconv.ParseFloat(os.Args[i], 64); err == nil {
			return v
		}
	}
	return def
}

// exchange sends numbered messages over a TCP connection, passes each through a pipe and checks
// that it comes back as sent.
// pairing is held while it dials and accepts, so that each goroutine gets both ends of one
// connection.
func exchange(tag int, ln net.Listener, pairing *sync.Mutex, end time.Time, messages *atomic.Int64) error {
	pairing.Lock()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		pairing.Unlock()
		return err
	}
	defer client.Close()
	server, err := ln.Accept()
	pairing.Unlock()
	if err != nil {
		return err
	}
	defer server.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	defer w.Close()
	got, back := make([]byte, size), make([]byte, size)
	for n := 1; time.Now().Before(end); n++ {
		msg := []byte(fmt.Sprintf("g%d:%d:", tag, n))
		msg = append(msg, bytes.Repeat([]byte("x"), size-len(msg))...)
		if _, err := client.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(server, got); err != nil {
			return err
		}
		if _, err := w.Write(got); err != nil {
			return err
		}
		if _, err := io.ReadFull(r, back); err != nil {
			return err
		}
		if !bytes.Equal(back, msg) {
			return fmt.Errorf("goroutine %d round %d: sent %q, got %q", tag, n, msg, back)
		}
		messages.Add(1)
		if n%50 == 0 {
			time.Sleep(2 * time.Millisecond) // bursts: not every CPU of the test machine for seconds
		}
	}
	return nil
}

func main() {
	goroutines := int(arg(1, 16))
	seconds := arg(2, 3)
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	if err := pprof.StartCPUProfile(io.Discard); err != nil {
		fmt.Println("cpu profile:", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	var messages atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, goroutines+8)
	var pairing sync.Mutex
	for i := 0; i < goroutines; i++ {
		wg.Add(1)
		go func(tag int) {
			defer wg.Done()
			if err := exchange(tag, ln, &pairing, end, &messages); err != nil {
				errs <- err
			}
		}(i)
	}
	// CPU-bound goroutines: running over 10 ms without a call, they are preempted by a signal to
	// their thread. Bursts of 15 ms every 50 ms, so that they do not take the test machine's CPUs.
	var spin atomic.Int64
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := uint64(1)
			for time.Now().Before(end) {
				burst := time.Now().Add(15 * time.Millisecond)
				for time.Now().Before(burst) {
					for j := 0; j < 100_000; j++ {
						x = x*6364136223846793005 + 1442695040888963407
					}
				}
				spin.Add(int64(x & 1))
				time.Sleep(35 * time.Millisecond)
			}
		}()
	}
	// Child processes: os/exec forks with vfork, and the child's close/dup3 go through Syscall6.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for os.Getenv("GO_STORM_NO_CHILDREN") == "" && time.Now().Before(end) {
			out, err := exec.Command("echo", "child").Output()
			if err != nil || string(out) != "child\n" {
				errs <- fmt.Errorf("child: %q, %v", out, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	wg.Wait()
	pprof.StopCPUProfile()
	close(errs)
	failed := false
	for err := range errs {
		fmt.Println(err)
		failed = true
	}
	if failed {
		os.Exit(1)
	}
	fmt.Printf("OK %d\n", messages.Load())
}
