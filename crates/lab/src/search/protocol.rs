//! The trial protocol between `attune search` and an objective process (docs/search.md):
//! Attune writes `{"trial": n, "params": {...}}` as one line to the process's stdin; the
//! process prints JSON lines on stdout, `{"step": k, "value": v}` for intermediate values and
//! a final `{"value": v}` or `{"values": [...]}`; logs go to stderr. A pruned or timed-out
//! process is killed. Anything else on stdout, a non-zero exit or no final value fails the
//! trial with the reason and the tail of stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How much of a failed process's stderr is kept with the trial.
const STDERR_TAIL: usize = 2000;

/// How a trial process ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessEnd {
    /// Exited 0; the final values it printed, if any.
    Exited(Option<Vec<f64>>),
    /// Killed because the pruner said stop.
    Pruned,
    /// Failed, and why (stderr tail included).
    Failed(String),
    /// Killed because the trial is no longer this worker's (its lease was lost).
    Abandoned,
}

/// A check run every `every` while the process runs (a shared study's lease renewal); it
/// returns whether to abandon the trial.
pub struct Tick<'a> {
    /// How often.
    pub every: Duration,
    /// The check.
    pub check: &'a mut dyn FnMut() -> bool,
}

/// One protocol line from the objective.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// `{"step": k, "value": v}`.
    Intermediate(u64, f64),
    /// `{"value": v}` or `{"values": [...]}`.
    Final(Vec<f64>),
}

/// Parses one stdout line; the error says what was wrong with it.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(m) = &v else { return Err("not a JSON object".into()) };
    let number = |x: &Value| -> Result<f64, String> {
        match x {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
            // Non-finite values arrive as strings from some writers; they fail the trial below.
            Value::String(s)
                if ["nan", "inf", "-inf", "infinity", "-infinity"].contains(&s.to_lowercase().as_str()) =>
            {
                Ok(s.to_lowercase().parse::<f64>().unwrap_or(f64::NAN))
            }
            Value::Null => Ok(f64::NAN),
            other => Err(format!("{other} is not a number")),
        }
    };
    match (m.get("step"), m.get("value"), m.get("values")) {
        (Some(s), Some(v), None) => {
            let step = s.as_u64().ok_or_else(|| format!("step {s} is not a non-negative integer"))?;
            Ok(Line::Intermediate(step, number(v)?))
        }
        (None, Some(v), None) => Ok(Line::Final(vec![number(v)?])),
        (None, None, Some(Value::Array(vs))) if !vs.is_empty() => {
            Ok(Line::Final(vs.iter().map(number).collect::<Result<_, _>>()?))
        }
        _ => Err("expected {\"step\": k, \"value\": v}, {\"value\": v} or {\"values\": [..]}".into()),
    }
}

enum Event {
    Stdout(String),
    StdoutClosed,
}

/// Runs one trial process: `command` gets `input` (one JSON line) on stdin; `on_value` is
/// called with each intermediate value and returns whether to prune (kill) the process.
pub fn run_process(
    mut command: Command,
    input: &str,
    timeout: Option<Duration>,
    mut tick: Option<Tick>,
    mut on_value: impl FnMut(u64, f64) -> bool,
) -> ProcessEnd {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group, so that stopping it stops what it started too (`sh -c` runs the
    // program as a child, which would otherwise keep running and hold the pipes open).
    command.process_group(0);
    // Held until this function returns: the trial's process group lives no longer.
    let _lifeline = match super::lifeline::attach(&mut command) {
        Ok(l) => l,
        Err(e) => return ProcessEnd::Failed(format!("cannot make the trial's lifeline pipe: {e}")),
    };
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => return ProcessEnd::Failed(format!("cannot start {:?}: {e}", command.get_program())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its stdin closes the pipe; that is its business.
        let _ = stdin.write_all(input.as_bytes()).and_then(|_| stdin.write_all(b"\n"));
    }
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = e.read_to_end(&mut buf);
            buf
        })
    });
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Event::Stdout(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(Event::StdoutClosed);
        });
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut next_tick = tick.as_ref().map(|t| Instant::now() + t.every);
    let mut finals = None;
    let mut lineno = 0usize;
    let verdict = loop {
        if let (Some(at), Some(t)) = (next_tick, tick.as_mut())
            && Instant::now() >= at
        {
            if (t.check)() {
                kill(&mut child);
                return ProcessEnd::Abandoned;
            }
            next_tick = Some(Instant::now() + t.every);
        }
        let until = [deadline, next_tick].into_iter().flatten().min();
        let wait = until.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(3600));
        match rx.recv_timeout(wait) {
            Ok(Event::Stdout(line)) => {
                lineno += 1;
                if line.trim().is_empty() {
                    continue;
                }
                match parse_line(line.trim()) {
                    Ok(Line::Intermediate(step, value)) => {
                        if !value.is_finite() {
                            break Some(format!("intermediate value {value} at step {step} is not finite"));
                        }
                        if on_value(step, value) {
                            kill(&mut child);
                            return ProcessEnd::Pruned;
                        }
                    }
                    Ok(Line::Final(v)) => finals = Some(v),
                    Err(why) => {
                        let shown: String = line.chars().take(200).collect();
                        break Some(format!(
                            "stdout line {lineno} is not a protocol line: {why}: '{shown}' (print logs to stderr)"
                        ));
                    }
                }
            }
            Ok(Event::StdoutClosed) | Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    kill(&mut child);
                    let secs = timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0);
                    return ProcessEnd::Failed(format!(
                        "timed out after {secs} s (--trial-timeout) and was killed{}",
                        tail(stderr.and_then(|h| h.join().ok()))
                    ));
                }
            }
        }
    };
    if let Some(why) = verdict {
        kill(&mut child);
        return ProcessEnd::Failed(format!("{why}{}", tail(stderr.and_then(|h| h.join().ok()))));
    }
    let status = child.wait();
    let err_tail = tail(stderr.and_then(|h| h.join().ok()));
    match status {
        Ok(s) if s.success() => ProcessEnd::Exited(finals),
        Ok(s) => ProcessEnd::Failed(format!("exited with {s}{err_tail}")),
        Err(e) => ProcessEnd::Failed(format!("could not wait for it: {e}{err_tail}")),
    }
}

/// Kills the trial's whole process group, then reaps the process.
fn kill(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `"; stderr ends: ..."` with the last [`STDERR_TAIL`] bytes of stderr, or nothing.
fn tail(stderr: Option<Vec<u8>>) -> String {
    let Some(bytes) = stderr else { return String::new() };
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_end();
    if text.is_empty() {
        return String::new();
    }
    let start = text.char_indices().rev().nth(STDERR_TAIL).map(|(i, _)| i).unwrap_or(0);
    format!("; stderr ends: {}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines_parse_and_garbage_is_named() {
        assert_eq!(parse_line(r#"{"step": 3, "value": 0.5}"#), Ok(Line::Intermediate(3, 0.5)));
        assert_eq!(parse_line(r#"{"value": 2}"#), Ok(Line::Final(vec![2.0])));
        assert_eq!(parse_line(r#"{"values": [1, -2.5]}"#), Ok(Line::Final(vec![1.0, -2.5])));
        assert!(parse_line(r#"{"value": "NaN"}"#).is_ok_and(|l| matches!(l, Line::Final(v) if v[0].is_nan())));
        assert!(parse_line("epoch 1 loss 0.3").unwrap_err().contains("not JSON"));
        assert!(parse_line(r#"{"step": -1, "value": 1}"#).unwrap_err().contains("step -1"));
        assert!(parse_line(r#"{"values": []}"#).is_err());
        assert!(parse_line(r#"{"value": "high"}"#).unwrap_err().contains("not a number"));
    }
}
