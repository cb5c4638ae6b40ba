//! A trial's processes die with the worker that started them. A worker killed with SIGKILL
//! cannot stop its trial, and a program started through `sh -c` has children that no signal
//! to the shell reaches; left running, such an orphan would keep writing into the trial's
//! folder while the worker that claims the re-queued trial continues it from there.
//!
//! So each trial process carries a lifeline: a pipe whose only writer is the worker. Between
//! fork and exec the trial's process (the leader of its own process group) forks a guard that
//! keeps only the pipe's read end and blocks on it. The read returns end-of-file when the
//! worker drops the lifeline after the trial, or when the kernel closes the worker's files
//! because it died; the guard then kills its process group (the trial and everything it
//! started, and itself).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Keeps a trial's process group alive: dropping it (or this process dying) kills the group.
pub struct Lifeline {
    _write: OwnedFd,
    _read: OwnedFd,
}

/// Gives `command` (which must run in its own process group) a lifeline.
pub fn attach(command: &mut Command) -> io::Result<Lifeline> {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and belong to nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let read_fd = read.as_raw_fd();
    // SAFETY: the hook runs in the forked child before exec and calls only async-signal-safe
    // functions (fork, close, read, kill, _exit); it touches no memory of the parent's.
    unsafe {
        command.pre_exec(move || {
            if libc::fork() == 0 {
                guard(read_fd);
            }
            Ok(())
        });
    }
    Ok(Lifeline { _write: write, _read: read })
}

/// The guard's life: hold nothing but the read end, wait for end-of-file, kill the group.
unsafe fn guard(read_fd: RawFd) -> ! {
    // SAFETY: plain system calls on this process's own descriptors and process group.
    unsafe {
        // Every other descriptor goes, so the guard never holds the trial's pipes open, nor
        // the write end of its own or another trial's lifeline.
        let closed = libc::syscall(libc::SYS_close_range, 0u32, (read_fd - 1) as u32, 0u32) == 0
            && libc::syscall(libc::SYS_close_range, (read_fd + 1) as u32, u32::MAX, 0u32) == 0;
        if !closed {
            for fd in (0..4096).filter(|&fd| fd != read_fd) {
                libc::close(fd);
            }
        }
        let mut byte = 0u8;
        loop {
            let n = libc::read(read_fd, (&raw mut byte).cast(), 1);
            if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                break;
            }
        }
        libc::kill(0, libc::SIGKILL);
        libc::_exit(0)
    }
}
