//! [`Queue`] in memory: jobs by id, with sorted indexes for due, scheduled, running and
//! finished jobs so that no operation scans a whole queue.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use baton_core::{
    Attempt, AttemptOutcome, Error, FencingToken, Job, JobFilter, JobId, JobLease, JobPage,
    JobState, NewJob, Owner, Priority, Queue, QueueCounts, QueueName, Reserved, Result, Retry,
    Timestamp, check_json_size, truncate_error, validate_batch, validate_list, validate_queue_list,
    validate_reserve, validate_ttl,
};
use serde_json::Value;

use crate::{MemoryBackend, lock};
use baton_hub::Hub;

/// Order among due jobs: highest priority, then earliest `run_at`, then lowest id.
type DueKey = (Reverse<Priority>, Timestamp, JobId);

/// Every job, and the indexes over them.
#[derive(Default)]
pub(crate) struct Jobs {
    next_id: i64,
    records: HashMap<JobId, Record>,
    queues: HashMap<QueueName, QueueIndex>,
    /// Running jobs by lease expiry.
    running: BTreeSet<(Timestamp, JobId)>,
    /// Terminal jobs by when they ended.
    finished: BTreeSet<(Timestamp, JobId)>,
    /// Queues whose jobs are not reserved.
    paused: BTreeSet<QueueName>,
}

struct Record {
    job: Job,
    last_token: u64,
}

#[derive(Default)]
struct QueueIndex {
    due: BTreeSet<DueKey>,
    scheduled: BTreeSet<(Timestamp, JobId)>,
    ids: BTreeSet<JobId>,
    counts: QueueCounts,
}

impl QueueIndex {
    fn promote(&mut self, records: &HashMap<JobId, Record>, now: Timestamp) {
        while let Some(&(run_at, id)) = self.scheduled.first() {
            if run_at > now {
                break;
            }
            self.scheduled.pop_first();
            if let Some(record) = records.get(&id) {
                self.due.insert(due_key(&record.job));
            }
        }
    }
}

fn due_key(job: &Job) -> DueKey {
    (Reverse(job.priority), job.run_at, job.id)
}

impl Jobs {
    fn insert(&mut self, new: &NewJob, now: Timestamp, hub: &Hub) -> JobId {
        self.next_id += 1;
        let id = JobId::new(self.next_id);
        let job = Job {
            id,
            queue: new.queue().clone(),
            payload: new.payload().clone(),
            priority: new.priority(),
            state: JobState::Pending,
            attempts: 0,
            retry: *new.retry(),
            created_at: now,
            run_at: now.saturating_add(new.delay()),
            finished_at: None,
            result: None,
            error: None,
            lease: None,
            history: Vec::new(),
            trace_parent: new.trace_parent().cloned(),
        };
        let index = self.queues.entry(job.queue.clone()).or_default();
        index.ids.insert(id);
        index.counts.pending += 1;
        hub.publish(&job.event());
        self.schedule(&job, now, hub);
        self.records.insert(id, Record { job, last_token: 0 });
        id
    }

    /// Puts a pending job in its queue's due or scheduled index, waking the queue if it is due.
    fn schedule(&mut self, job: &Job, now: Timestamp, hub: &Hub) {
        let index = self.queues.entry(job.queue.clone()).or_default();
        if job.run_at <= now {
            index.due.insert(due_key(job));
            hub.wake(&job.queue);
        } else {
            index.scheduled.insert((job.run_at, job.id));
        }
    }

    fn take_due(&mut self, queues: &[QueueName], now: Timestamp) -> Option<JobId> {
        let mut best: Option<(DueKey, &QueueName)> = None;
        for name in queues {
            if self.paused.contains(name) {
                continue;
            }
            let Some(index) = self.queues.get_mut(name) else {
                continue;
            };
            index.promote(&self.records, now);
            if let Some(key) = index.due.first()
                && best.as_ref().is_none_or(|(best_key, _)| key < best_key)
            {
                best = Some((*key, name));
            }
        }
        let (key, name) = best?;
        self.queues.get_mut(name)?.due.remove(&key);
        Some(key.2)
    }

    fn set_state(&mut self, id: JobId, state: JobState) {
        let Some(record) = self.records.get_mut(&id) else {
            return;
        };
        let previous = record.job.state;
        record.job.state = state;
        if let Some(index) = self.queues.get_mut(&record.job.queue) {
            let from = index.counts.get_mut(previous);
            *from = from.saturating_sub(1);
            *index.counts.get_mut(state) += 1;
        }
    }

    /// The running job `lease` holds, if the lease is current.
    fn current(&self, lease: &JobLease, now: Timestamp) -> Result<&Job> {
        let job = &self
            .records
            .get(&lease.job)
            .ok_or_else(|| lease.job.lease_lost())?
            .job;
        let held = job.state == JobState::Running
            && job.lease.as_ref().is_some_and(|current| {
                current.token() == lease.lease.token() && current.owner() == lease.lease.owner()
            })
            && job
                .lease
                .as_ref()
                .is_some_and(|current| current.expires_at() > now);
        if held {
            Ok(job)
        } else {
            Err(lease.job.lease_lost())
        }
    }

    /// Ends the running attempt of `id` with `outcome`, taking the job out of the running
    /// index.
    fn end_attempt(&mut self, id: JobId, outcome: AttemptOutcome, now: Timestamp) {
        let Some(record) = self.records.get_mut(&id) else {
            return;
        };
        if let Some(lease) = record.job.lease.take() {
            self.running.remove(&(lease.expires_at(), id));
        }
        if let Some(attempt) = record.job.history.last_mut()
            && attempt.outcome.is_none()
        {
            attempt.finished_at = Some(now);
            attempt.outcome = Some(outcome);
        }
    }

    fn finish(&mut self, id: JobId, state: JobState, now: Timestamp, hub: &Hub) {
        self.set_state(id, state);
        if let Some(record) = self.records.get_mut(&id) {
            record.job.finished_at = Some(now);
            self.finished.insert((now, id));
            hub.publish(&record.job.event());
        }
    }

    /// After a failed or expired attempt: back to pending after `delay`, or failed.
    fn retry_or_fail(&mut self, id: JobId, delay: Option<Duration>, now: Timestamp, hub: &Hub) {
        let Some(delay) = delay else {
            self.finish(id, JobState::Failed, now, hub);
            return;
        };
        self.set_state(id, JobState::Pending);
        let Some(record) = self.records.get_mut(&id) else {
            return;
        };
        record.job.run_at = now.saturating_add(delay);
        let job = record.job.clone();
        hub.publish(&job.event());
        self.schedule(&job, now, hub);
    }
}

#[async_trait]
impl Queue for MemoryBackend {
    async fn enqueue(&self, job: &NewJob) -> Result<JobId> {
        let now = self.now();
        Ok(lock(&self.inner.jobs).insert(job, now, &self.inner.dispatch))
    }

    async fn enqueue_batch(&self, jobs: &[NewJob]) -> Result<Vec<JobId>> {
        validate_batch(jobs)?;
        let now = self.now();
        let mut store = lock(&self.inner.jobs);
        Ok(jobs
            .iter()
            .map(|job| store.insert(job, now, &self.inner.dispatch))
            .collect())
    }

    async fn reserve(
        &self,
        queues: &[QueueName],
        owner: &Owner,
        lease_ttl: Duration,
        max: usize,
    ) -> Result<Vec<Reserved>> {
        validate_reserve(queues, max, lease_ttl)?;
        let now = self.now();
        let expires_at = now.saturating_add(lease_ttl);
        let mut store = lock(&self.inner.jobs);
        let mut reserved = Vec::new();
        while reserved.len() < max {
            let Some(id) = store.take_due(queues, now) else {
                break;
            };
            store.set_state(id, JobState::Running);
            store.running.insert((expires_at, id));
            let Some(record) = store.records.get_mut(&id) else {
                continue;
            };
            record.last_token += 1;
            let lease = baton_core::Lease::granted(
                owner.clone(),
                FencingToken::new(record.last_token),
                expires_at,
            );
            let job = &mut record.job;
            job.attempts += 1;
            job.lease = Some(lease.clone());
            job.history.push(Attempt {
                number: job.attempts,
                owner: owner.clone(),
                started_at: now,
                finished_at: None,
                outcome: None,
            });
            self.inner.dispatch.publish(&job.event());
            reserved.push(Reserved {
                job: job.clone(),
                lease: JobLease { job: id, lease },
            });
        }
        Ok(reserved)
    }

    async fn touch(&self, lease: &JobLease, ttl: Duration) -> Result<JobLease> {
        validate_ttl(ttl)?;
        let now = self.now();
        let mut store = lock(&self.inner.jobs);
        let old = store.current(lease, now)?.lease.clone();
        let renewed = baton_core::Lease::granted(
            lease.lease.owner().clone(),
            lease.lease.token(),
            now.saturating_add(ttl),
        );
        if let Some(old) = old {
            store.running.remove(&(old.expires_at(), lease.job));
        }
        store.running.insert((renewed.expires_at(), lease.job));
        if let Some(record) = store.records.get_mut(&lease.job) {
            record.job.lease = Some(renewed.clone());
        }
        Ok(JobLease {
            job: lease.job,
            lease: renewed,
        })
    }

    async fn complete(&self, lease: &JobLease, result: Value) -> Result<Job> {
        check_json_size("result", &result)?;
        let now = self.now();
        let mut store = lock(&self.inner.jobs);
        store.current(lease, now)?;
        store.end_attempt(lease.job, AttemptOutcome::Succeeded, now);
        if let Some(record) = store.records.get_mut(&lease.job) {
            record.job.result = Some(result);
        }
        store.finish(lease.job, JobState::Succeeded, now, &self.inner.dispatch);
        store
            .records
            .get(&lease.job)
            .map(|record| record.job.clone())
            .ok_or_else(|| lease.job.lease_lost())
    }

    async fn fail(&self, lease: &JobLease, error: &str, retry: Retry) -> Result<Job> {
        let now = self.now();
        let error = truncate_error(error);
        let mut store = lock(&self.inner.jobs);
        let delay = store.current(lease, now)?.retry_delay(retry);
        store.end_attempt(
            lease.job,
            AttemptOutcome::Failed {
                error: error.clone(),
            },
            now,
        );
        if let Some(record) = store.records.get_mut(&lease.job) {
            record.job.error = Some(error);
        }
        store.retry_or_fail(lease.job, delay, now, &self.inner.dispatch);
        store
            .records
            .get(&lease.job)
            .map(|record| record.job.clone())
            .ok_or_else(|| lease.job.lease_lost())
    }

    async fn cancel(&self, id: JobId) -> Result<Job> {
        let now = self.now();
        let mut store = lock(&self.inner.jobs);
        let job = &store
            .records
            .get(&id)
            .ok_or_else(|| Error::not_found(format!("job {id}")))?
            .job;
        match job.state {
            JobState::Canceled => return Ok(job.clone()),
            JobState::Succeeded | JobState::Failed => {
                return Err(Error::conflict(format!("job {id} already {}", job.state)));
            }
            JobState::Pending => {
                let (queue, key, scheduled) = (job.queue.clone(), due_key(job), (job.run_at, id));
                if let Some(index) = store.queues.get_mut(&queue) {
                    index.due.remove(&key);
                    index.scheduled.remove(&scheduled);
                }
            }
            JobState::Running => store.end_attempt(id, AttemptOutcome::Canceled, now),
        }
        store.finish(id, JobState::Canceled, now, &self.inner.dispatch);
        store
            .records
            .get(&id)
            .map(|record| record.job.clone())
            .ok_or_else(|| Error::not_found(format!("job {id}")))
    }

    async fn retry(&self, id: JobId) -> Result<Job> {
        let now = self.now();
        let mut store = lock(&self.inner.jobs);
        let record = store
            .records
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("job {id}")))?;
        match record.job.state {
            JobState::Pending | JobState::Running => return Ok(record.job.clone()),
            JobState::Succeeded => {
                return Err(Error::conflict(format!("job {id} already succeeded")));
            }
            JobState::Failed | JobState::Canceled => {}
        }
        if let Some(finished_at) = record.job.finished_at.take() {
            store.finished.remove(&(finished_at, id));
        }
        store.retry_or_fail(id, Some(Duration::ZERO), now, &self.inner.dispatch);
        store
            .records
            .get(&id)
            .map(|record| record.job.clone())
            .ok_or_else(|| Error::not_found(format!("job {id}")))
    }

    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        validate_list(filter)?;
        let store = lock(&self.inner.jobs);
        let below = filter.before.map_or(i64::MAX, JobId::get);
        let candidates: Box<dyn Iterator<Item = JobId>> = match &filter.queue {
            Some(queue) => match store.queues.get(queue) {
                Some(index) => Box::new(index.ids.range(..JobId::new(below)).rev().copied()),
                None => Box::new(std::iter::empty()),
            },
            None => Box::new((1..below.min(store.next_id + 1)).rev().map(JobId::new)),
        };
        // One more than asked for tells whether an older match is left.
        let jobs = candidates
            .filter_map(|id| store.records.get(&id))
            .filter(|record| filter.state.is_none_or(|state| record.job.state == state))
            .take(filter.limit + 1)
            .map(|record| record.job.clone())
            .collect();
        Ok(JobPage::from_newest(jobs, filter.limit))
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let store = lock(&self.inner.jobs);
        Ok(store.records.get(&id).map(|record| record.job.clone()))
    }

    async fn last(&self, queue: &QueueName) -> Result<Option<Job>> {
        let store = lock(&self.inner.jobs);
        Ok(store
            .queues
            .get(queue)
            .and_then(|index| index.ids.last())
            .and_then(|id| store.records.get(id))
            .map(|record| record.job.clone()))
    }

    async fn counts(&self, queue: &QueueName) -> Result<QueueCounts> {
        let store = lock(&self.inner.jobs);
        Ok(store
            .queues
            .get(queue)
            .map(|index| index.counts)
            .unwrap_or_default())
    }

    async fn pause(&self, queue: &QueueName) -> Result<()> {
        lock(&self.inner.jobs).paused.insert(queue.clone());
        Ok(())
    }

    async fn resume(&self, queue: &QueueName) -> Result<()> {
        if lock(&self.inner.jobs).paused.remove(queue) {
            self.inner.dispatch.wake(queue);
        }
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<QueueName>> {
        Ok(lock(&self.inner.jobs).paused.iter().cloned().collect())
    }

    async fn queues(&self, after: Option<&QueueName>, limit: usize) -> Result<Vec<QueueName>> {
        validate_queue_list(limit)?;
        let store = lock(&self.inner.jobs);
        // A queue keeps its index once it has had a job, so purged queues stay listed.
        let mut names: Vec<&QueueName> = store
            .queues
            .keys()
            .chain(&store.paused)
            .filter(|name| after.is_none_or(|after| *name > after))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(limit);
        Ok(names.into_iter().cloned().collect())
    }

    async fn requeue_expired(&self) -> Result<Vec<JobId>> {
        let now = self.now();
        let mut store = lock(&self.inner.jobs);
        let mut requeued = Vec::new();
        while let Some(&(expires_at, id)) = store.running.first() {
            if expires_at > now {
                break;
            }
            store.running.pop_first();
            store.end_attempt(id, AttemptOutcome::Expired, now);
            let Some(record) = store.records.get_mut(&id) else {
                continue;
            };
            record.job.error = Some("lease expired".to_owned());
            let delay = record.job.retry_delay(Retry::ByPolicy);
            store.retry_or_fail(id, delay, now, &self.inner.dispatch);
            requeued.push(id);
        }
        Ok(requeued)
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64> {
        let cutoff = self.now().saturating_sub(older_than);
        let mut store = lock(&self.inner.jobs);
        let mut purged = 0;
        while let Some(&(finished_at, id)) = store.finished.first() {
            if finished_at > cutoff {
                break;
            }
            store.finished.pop_first();
            let Some(record) = store.records.remove(&id) else {
                continue;
            };
            if let Some(index) = store.queues.get_mut(&record.job.queue) {
                index.ids.remove(&id);
                let count = index.counts.get_mut(record.job.state);
                *count = count.saturating_sub(1);
            }
            purged += 1;
        }
        Ok(purged)
    }
}
