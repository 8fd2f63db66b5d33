//! Reading script replies: every shape is checked, and a reply no script produces is an error,
//! never a panic.

use baton_core::{
    Attempt, AttemptOutcome, FencingToken, Job, JobId, JobState, Lease, Owner, Priority, QueueName,
    Result, RetryPolicy, Timestamp, TraceParent,
};
use redis::Value;
use serde::Deserialize;

use crate::unexpected;

/// The elements of an array reply.
pub(crate) fn array(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(format!("expected an array, got {other:?}"))),
    }
}

/// A string reply; `None` for nil.
pub(crate) fn opt_text(value: Value) -> Result<Option<String>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| unexpected("a string that is not UTF-8")),
        Value::SimpleString(text) => Ok(Some(text)),
        Value::Okay => Ok(Some("OK".to_owned())),
        Value::Int(n) => Ok(Some(n.to_string())),
        Value::Boolean(false) => Ok(None),
        other => Err(unexpected(format!("expected a string, got {other:?}"))),
    }
}

/// A string reply that must be there.
pub(crate) fn text(value: Value) -> Result<String> {
    opt_text(value)?.ok_or_else(|| unexpected("nil where a string was expected"))
}

/// An integer reply (or a string holding one).
pub(crate) fn int(value: Value) -> Result<i64> {
    match value {
        Value::Int(n) => Ok(n),
        other => {
            let text = text(other)?;
            text.parse()
                .map_err(|_| unexpected(format!("{text:?} is not an integer")))
        }
    }
}

/// `value` parsed from a string.
fn parse<T: std::str::FromStr>(what: &str, value: Option<String>) -> Result<T> {
    let value = value.ok_or_else(|| unexpected(format!("job without {what}")))?;
    value
        .parse()
        .map_err(|_| unexpected(format!("job {what} {value:?} does not parse")))
}

fn timestamp(what: &str, value: Option<String>) -> Result<Timestamp> {
    parse::<i64>(what, value).map(Timestamp::from_millis)
}

fn json<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T> {
    serde_json::from_str(value).map_err(|e| unexpected(format!("job {what}: {e}")))
}

/// One attempt as a script writes it.
#[derive(Deserialize)]
struct StoredAttempt {
    number: f64,
    owner: String,
    started_at: f64,
    #[serde(default)]
    finished_at: Option<f64>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn attempt(text: &str) -> Result<Attempt> {
    let stored: StoredAttempt = json("attempt", text)?;
    let outcome = match stored.outcome.as_deref() {
        None => None,
        Some("succeeded") => Some(AttemptOutcome::Succeeded),
        Some("failed") => Some(AttemptOutcome::Failed {
            error: stored.error.unwrap_or_default(),
        }),
        Some("expired") => Some(AttemptOutcome::Expired),
        Some("canceled") => Some(AttemptOutcome::Canceled),
        Some(other) => return Err(unexpected(format!("attempt outcome {other:?}"))),
    };
    Ok(Attempt {
        number: stored.number as u32,
        owner: Owner::new(&stored.owner)?,
        started_at: Timestamp::from_millis(stored.started_at as i64),
        finished_at: stored
            .finished_at
            .map(|at| Timestamp::from_millis(at as i64)),
        outcome,
    })
}

/// A job from a script's job view: `{id, fields, attempts}`, or nil.
pub(crate) fn job(value: Value) -> Result<Option<Job>> {
    if matches!(value, Value::Nil | Value::Boolean(false)) {
        return Ok(None);
    }
    let mut parts = array(value)?.into_iter();
    let (Some(id), Some(fields), Some(history), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unexpected("a job view without three parts"));
    };
    let id = JobId::new(int(id)?);
    let mut fields = array(fields)?
        .into_iter()
        .map(opt_text)
        .collect::<Result<Vec<_>>>()?
        .into_iter();
    let mut next = || fields.next().flatten();
    let (queue, payload, priority, state) = (next(), next(), next(), next());
    let (attempts, retry, created_at, run_at) = (next(), next(), next(), next());
    let (finished_at, result, error, owner) = (next(), next(), next(), next());
    let (token, expires_at) = (next(), next());
    let (attempt_started, attempt_ended, attempt_outcome) = (next(), next(), next());
    let trace_parent = next()
        .map(|text| TraceParent::parse(&text))
        .transpose()
        .map_err(|e| unexpected(format!("job trace parent: {e}")))?;
    let state: JobState = parse("state", state)?;
    let attempts: u32 = parse("attempts", attempts)?;
    let lease = if state == JobState::Running {
        Some(Lease::granted(
            Owner::new(owner.clone().unwrap_or_default())?,
            FencingToken::new(parse("token", token)?),
            timestamp("lease expiry", expires_at)?,
        ))
    } else {
        None
    };
    let mut history = array(history)?
        .into_iter()
        .map(|entry| attempt(&text(entry)?))
        .collect::<Result<Vec<_>>>()?;
    if let Some(started) = attempt_started {
        let outcome = match attempt_outcome.as_deref() {
            None => None,
            Some("succeeded") => Some(AttemptOutcome::Succeeded),
            Some("failed") => Some(AttemptOutcome::Failed {
                error: error.clone().unwrap_or_default(),
            }),
            Some("expired") => Some(AttemptOutcome::Expired),
            Some("canceled") => Some(AttemptOutcome::Canceled),
            Some(other) => return Err(unexpected(format!("attempt outcome {other:?}"))),
        };
        history.push(Attempt {
            number: attempts,
            owner: Owner::new(owner.unwrap_or_default())?,
            started_at: timestamp("attempt start", Some(started))?,
            finished_at: attempt_ended
                .map(|at| timestamp("attempt end", Some(at)))
                .transpose()?,
            outcome,
        });
    }
    Ok(Some(Job {
        id,
        queue: QueueName::new(queue.unwrap_or_default())?,
        payload: json("payload", &payload.unwrap_or_default())?,
        priority: Priority(parse("priority", priority)?),
        state,
        attempts,
        retry: json::<RetryPolicy>("retry policy", &retry.unwrap_or_default())?,
        created_at: timestamp("creation time", created_at)?,
        run_at: timestamp("due time", run_at)?,
        finished_at: finished_at
            .map(|at| timestamp("finish time", Some(at)))
            .transpose()?,
        result: result.map(|r| json("result", &r)).transpose()?,
        error,
        lease,
        history,
        trace_parent,
    }))
}

/// A job view that must be there.
pub(crate) fn some_job(value: Value) -> Result<Job> {
    job(value)?.ok_or_else(|| unexpected("nil where a job was expected"))
}

/// The status word that opens a script's `{status, …}` reply, and the rest.
pub(crate) fn status(value: Value) -> Result<(String, std::vec::IntoIter<Value>)> {
    let mut parts = array(value)?.into_iter();
    let word = text(
        parts
            .next()
            .ok_or_else(|| unexpected("an empty status reply"))?,
    )?;
    Ok((word, parts))
}
