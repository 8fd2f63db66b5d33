//! [`Queue`] on Redis: a hash per job, per queue a due set, a scheduled set, an id set and
//! counts, and global sets of running and finished jobs (see `lua/jobs.lua`).

use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Error, Job, JobEvent, JobFilter, JobId, JobLease, JobPage, JobState, NewJob, Owner, Queue,
    QueueCounts, QueueName, Reserved, Result, Retry, check_json_size, truncate_error,
    validate_batch, validate_list, validate_queue_list, validate_reserve, validate_ttl,
};
use redis::{AsyncCommands, Value};
use serde_json::Value as Json;
use tokio::sync::oneshot;

use crate::batch::{CompleteRequest, Completion, ReserveRequest, job_invocation};
use crate::running;
use crate::{RedisBackend, from_redis, millis, unexpected, value};

/// Expired leases one `requeue` script call handles.
const REQUEUE_CHUNK: usize = 500;
/// Finished jobs one `purge` script call deletes.
const PURGE_CHUNK: usize = 1000;

/// The error of a call whose batching task is gone (the runtime is shutting down).
fn batcher_gone() -> Error {
    Error::transient(std::io::Error::other("the batching task stopped"))
}

fn to_json(what: &str, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|error| Error::invalid(format!("{what}: {error}")))
}

impl RedisBackend {
    /// Runs a job script with `args` after the four common arguments.
    async fn job_script(&self, script: &redis::Script, args: &[String]) -> Result<Value> {
        let keys = &self.inner.keys;
        let mut invocation = job_invocation(script, keys, self.inner.subscriber.origin());
        for arg in args {
            invocation.arg(arg);
        }
        invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(from_redis)
    }

    /// Tells this process's subscribers about `job`'s new state, and wakes its queue when the
    /// change made it due.
    fn announce(&self, job: &Job) {
        self.inner.hub.publish(&job.event());
        if job.state == JobState::Pending {
            let changed = job
                .history
                .last()
                .and_then(|attempt| attempt.finished_at)
                .unwrap_or(job.created_at);
            if job.run_at <= changed {
                self.inner.hub.wake(&job.queue);
            }
        }
    }
}

impl RedisBackend {
    /// Hands a reservation to its batching task; the answer comes through [`Self::reserved`].
    fn send_reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<oneshot::Receiver<Result<Vec<Job>>>> {
        validate_reserve(queues, max, lease_ttl)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .batchers
            .reserve
            .send(ReserveRequest {
                queues: queues.to_vec(),
                owner: owner.clone(),
                ttl_ms: millis(lease_ttl),
                max,
                reply,
            })
            .map_err(|_| batcher_gone())?;
        Ok(answer)
    }

    /// The jobs a reservation sent by [`Self::send_reserve`] got.
    async fn reserved(&self, answer: oneshot::Receiver<Result<Vec<Job>>>) -> Result<Vec<Reserved>> {
        let jobs = answer.await.map_err(|_| batcher_gone())??;
        self.inner.running.remember(&jobs);
        jobs.into_iter()
            .map(|job| {
                self.announce(&job);
                let lease = job
                    .lease
                    .clone()
                    .ok_or_else(|| unexpected("a reserved job without a lease"))?;
                Ok(Reserved {
                    lease: JobLease { job: job.id, lease },
                    job,
                })
            })
            .collect()
    }

    /// Hands a completion to its batching task; the answer comes through [`Self::completed`].
    fn send_complete(
        &self,
        lease: &JobLease,
        result: &Json,
    ) -> Result<oneshot::Receiver<Result<Option<Completion>>>> {
        check_json_size("result", result)?;
        let (reply, answer) = oneshot::channel();
        let brief = self.inner.running.holds(lease.job, lease.lease.token());
        self.inner
            .batchers
            .complete
            .send(CompleteRequest {
                lease: lease.clone(),
                result: to_json("result", result)?,
                brief,
                reply,
            })
            .map_err(|_| batcher_gone())?;
        Ok(answer)
    }

    /// The job a completion sent by [`Self::send_complete`] finished.
    async fn completed(
        &self,
        lease: &JobLease,
        result: Json,
        answer: oneshot::Receiver<Result<Option<Completion>>>,
    ) -> Result<Job> {
        // Only the one completion the script accepted forgets the held copy; a refused one
        // leaves it to be pruned once its lease is long past.
        let completion = answer
            .await
            .map_err(|_| batcher_gone())??
            .ok_or_else(|| lease.job.lease_lost())?;
        let held = self.inner.running.take(lease.job, lease.lease.token());
        let job = match completion {
            Completion::Job(job) => *job,
            Completion::At(at) => {
                let held =
                    held.ok_or_else(|| unexpected("a brief completion of a job not held"))?;
                running::finish(held, result, at)
            }
        };
        self.announce(&job);
        Ok(job)
    }
}

/// The most jobs one `list` call looks at (at least one more than it returns).
const LIST_BUDGET: usize = 1000;

#[async_trait]
impl Queue for RedisBackend {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let ids = self.enqueue_batch(std::slice::from_ref(job)).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| unexpected("enqueue returned no id"))
    }

    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        validate_batch(jobs)?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Vec::with_capacity(1 + jobs.len() * 6);
        args.push(jobs.len().to_string());
        for job in jobs {
            args.push(job.queue().as_str().to_owned());
            args.push(to_json("payload", job.payload())?);
            args.push(job.priority().0.to_string());
            args.push(millis(job.delay()).to_string());
            args.push(to_json("retry policy", job.retry())?);
            args.push(
                job.trace_parent()
                    .map(|parent| parent.as_str().to_owned())
                    .unwrap_or_default(),
            );
        }
        let reply = self.job_script(&self.inner.scripts.enqueue, &args).await?;
        let mut parts = value::array(reply)?.into_iter();
        let first = value::int(parts.next().ok_or_else(|| unexpected("enqueue reply"))?)?;
        let ids: Vec<JobId> = (0..jobs.len() as i64)
            .map(|n| JobId::new(first + n))
            .collect();
        for (job, id) in jobs.iter().zip(&ids) {
            self.inner.hub.publish(&JobEvent {
                job: *id,
                queue: job.queue().clone(),
                state: JobState::Pending,
                attempts: 0,
            });
            if job.delay().is_zero() {
                self.inner.hub.wake(job.queue());
            }
        }
        Ok(ids)
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        let answer = self.send_reserve(queues, owner, lease_ttl, max)?;
        self.reserved(answer).await
    }

    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease> {
        validate_ttl(ttl)?;
        let args = [
            lease.job.get().to_string(),
            lease.lease.owner().as_str().to_owned(),
            lease.lease.token().get().to_string(),
            millis(ttl).to_string(),
        ];
        let reply = self.job_script(&self.inner.scripts.touch, &args).await?;
        let (status, mut rest) = value::status(reply)?;
        if status != "ok" {
            return Err(lease.job.lease_lost());
        }
        let expires = value::int(rest.next().ok_or_else(|| unexpected("touch reply"))?)?;
        Ok(JobLease {
            job: lease.job,
            lease: baton_core::Lease::granted(
                lease.lease.owner().clone(),
                lease.lease.token(),
                baton_core::Timestamp::from_millis(expires),
            ),
        })
    }

    async fn complete(&self, lease: &JobLease, result: Json) -> Result<Job> {
        let answer = self.send_complete(lease, &result)?;
        self.completed(lease, result, answer).await
    }

    /// Both requests go to their batching tasks at once, so that the completion and the
    /// reservation share the wait for their script calls instead of taking one after the other.
    async fn complete_and_reserve(
        &self,
        lease: &JobLease,
        result: Json,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<(Result<Job>, Vec<Reserved>)> {
        let completion = self.send_complete(lease, &result);
        let reservation = self.send_reserve(queues, owner, lease_ttl, max)?;
        let completed = match completion {
            Ok(answer) => self.completed(lease, result, answer).await,
            Err(error) => Err(error),
        };
        Ok((completed, self.reserved(reservation).await?))
    }

    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job> {
        let (mode, after) = match retry {
            Retry::ByPolicy => ("policy", 0),
            Retry::After(delay) => ("after", millis(delay)),
            Retry::Never => ("never", 0),
        };
        let args = [
            lease.job.get().to_string(),
            lease.lease.owner().as_str().to_owned(),
            lease.lease.token().get().to_string(),
            truncate_error(error),
            mode.to_owned(),
            after.to_string(),
            fastrand::f64().to_string(),
        ];
        let reply = self.job_script(&self.inner.scripts.fail, &args).await?;
        self.inner.running.take(lease.job, lease.lease.token());
        let (status, mut rest) = value::status(reply)?;
        if status != "ok" {
            return Err(lease.job.lease_lost());
        }
        let job = value::some_job(rest.next().ok_or_else(|| unexpected("fail reply"))?)?;
        self.announce(&job);
        Ok(job)
    }

    async fn cancel(&self, id: JobId) -> Result<Job> {
        let reply = self
            .job_script(&self.inner.scripts.cancel, &[id.get().to_string()])
            .await?;
        let (status, mut rest) = value::status(reply)?;
        match status.as_str() {
            "ok" => {
                let job = value::some_job(rest.next().ok_or_else(|| unexpected("cancel reply"))?)?;
                let changed = rest.next().map(value::int).transpose()?.unwrap_or(0) == 1;
                if changed {
                    self.announce(&job);
                }
                Ok(job)
            }
            "notfound" => Err(Error::not_found(format!("job {id}"))),
            "conflict" => {
                let state = rest
                    .next()
                    .map(value::text)
                    .transpose()?
                    .unwrap_or_default();
                Err(Error::conflict(format!("job {id} already {state}")))
            }
            other => Err(unexpected(format!("cancel status {other:?}"))),
        }
    }

    async fn retry(&self, id: JobId) -> Result<Job> {
        let reply = self
            .job_script(&self.inner.scripts.retry, &[id.get().to_string()])
            .await?;
        let (status, mut rest) = value::status(reply)?;
        match status.as_str() {
            "ok" => {
                let job = value::some_job(rest.next().ok_or_else(|| unexpected("retry reply"))?)?;
                let changed = rest.next().map(value::int).transpose()?.unwrap_or(0) == 1;
                if changed {
                    self.announce(&job);
                }
                Ok(job)
            }
            "notfound" => Err(Error::not_found(format!("job {id}"))),
            "conflict" => Err(Error::conflict(format!("job {id} already succeeded"))),
            other => Err(unexpected(format!("retry status {other:?}"))),
        }
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        redis::cmd("SADD")
            .arg(self.inner.keys.paused())
            .arg(queue.as_str())
            .query_async::<i64>(&mut self.connection())
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        let reply = self
            .job_script(&self.inner.scripts.resume, &[queue.as_str().to_owned()])
            .await?;
        if value::int(reply)? == 1 {
            self.inner.hub.wake(queue);
        }
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.inner.keys.paused())
            .query_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        names.sort_unstable();
        names.into_iter().map(QueueName::new).collect()
    }

    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>> {
        validate_queue_list(limit)?;
        let keys = &self.inner.keys;
        // A lexicographic range is bytewise: `(name` starts just after `name`.
        let min = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
        // The page of enqueued queues and the paused ones, in one round trip.
        let (mut names, paused): (Vec<String>, Vec<String>) = redis::pipe()
            .cmd("ZRANGE")
            .arg(keys.queues())
            .arg(&min)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .cmd("SMEMBERS")
            .arg(keys.paused())
            .query_async(&mut self.connection())
            .await
            .map_err(from_redis)?;
        names.extend(
            paused
                .into_iter()
                .filter(|name| after.is_none_or(|after| name.as_str() > after.as_str())),
        );
        names.sort_unstable();
        names.dedup();
        names.truncate(limit);
        names.into_iter().map(QueueName::new).collect()
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        validate_list(filter)?;
        let args = [
            filter.before.map_or(i64::MAX, JobId::get).to_string(),
            filter.limit.to_string(),
            LIST_BUDGET.max(filter.limit + 1).to_string(),
            filter
                .queue
                .as_ref()
                .map_or(String::new(), |queue| queue.as_str().to_owned()),
            filter
                .state
                .map_or(String::new(), |state| state.as_str().to_owned()),
        ];
        let reply = self.job_script(&self.inner.scripts.list, &args).await?;
        let mut parts = value::array(reply)?.into_iter();
        let (Some(jobs), Some(next)) = (parts.next(), parts.next()) else {
            return Err(unexpected("list reply"));
        };
        let jobs = value::array(jobs)?
            .into_iter()
            .map(value::some_job)
            .collect::<Result<Vec<_>>>()?;
        let next = match next {
            redis::Value::Nil => None,
            next => Some(JobId::new(value::int(next)?)),
        };
        Ok(JobPage { jobs, next })
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let reply = self
            .job_script(&self.inner.scripts.get, &[id.get().to_string()])
            .await?;
        value::job(reply)
    }

    async fn last(&self, queue: &QueueName) -> Result<Option<Job>> {
        let reply = self
            .job_script(&self.inner.scripts.last, &[queue.as_str().to_owned()])
            .await?;
        value::job(reply)
    }

    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        let stored: Vec<(String, i64)> = self
            .connection()
            .hgetall(self.inner.keys.queue_counts(queue))
            .await
            .map_err(from_redis)?;
        let mut counts = QueueCounts::default();
        for (state, count) in stored {
            if let Ok(state) = state.parse::<JobState>() {
                *counts.get_mut(state) = u64::try_from(count).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    async fn requeue_expired(&self) -> Result<Vec<JobId>> {
        let mut touched = Vec::new();
        loop {
            let args = [REQUEUE_CHUNK.to_string(), fastrand::f64().to_string()];
            let reply = self.job_script(&self.inner.scripts.requeue, &args).await?;
            let mut parts = value::array(reply)?.into_iter();
            let (Some(looked), Some(entries)) = (parts.next(), parts.next()) else {
                return Err(unexpected("requeue reply"));
            };
            for entry in value::array(entries)? {
                let mut fields = value::array(entry)?.into_iter();
                let mut next = || -> Result<String> {
                    value::text(fields.next().ok_or_else(|| unexpected("requeue entry"))?)
                };
                let (id, queue, state, attempts) = (next()?, next()?, next()?, next()?);
                let event = JobEvent {
                    job: JobId::new(
                        id.parse()
                            .map_err(|_| unexpected(format!("job id {id:?}")))?,
                    ),
                    queue: QueueName::new(queue)?,
                    state: state.parse()?,
                    attempts: attempts.parse().unwrap_or(0),
                };
                self.inner.hub.publish(&event);
                if event.state == JobState::Pending {
                    self.inner.hub.wake(&event.queue);
                }
                touched.push(event.job);
            }
            if usize::try_from(value::int(looked)?).unwrap_or(0) < REQUEUE_CHUNK {
                return Ok(touched);
            }
        }
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64> {
        let mut purged = 0;
        loop {
            let args = [millis(older_than).to_string(), PURGE_CHUNK.to_string()];
            let reply = self.job_script(&self.inner.scripts.purge, &args).await?;
            let mut parts = value::array(reply)?.into_iter();
            let (Some(looked), Some(deleted)) = (parts.next(), parts.next()) else {
                return Err(unexpected("purge reply"));
            };
            purged += u64::try_from(value::int(deleted)?).unwrap_or(0);
            if usize::try_from(value::int(looked)?).unwrap_or(0) < PURGE_CHUNK {
                return Ok(purged);
            }
        }
    }
}
