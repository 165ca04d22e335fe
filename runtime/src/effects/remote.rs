//! `run-remote`: commands this node's rules send to other nodes, waiting for their results.
//! A result is matched by task id (the action id); one that does not come in time becomes an
//! error outcome, so the rule always hears back.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{CommandResult, ReplyTo, RunResult};
use crate::mqtt::lcm::{self, code};

/// A remote command a rule asked for.
pub struct Asked {
    pub rule: Arc<str>,
    pub node: String,
    pub service: String,
    pub command: String,
    pub reply: ReplyTo,
}

struct Pending {
    asked: Asked,
    started: Instant,
    deadline: Instant,
}

#[derive(Default)]
pub struct Remote {
    /// By task id.
    pending: HashMap<u64, Pending>,
    /// Result topics of the nodes asked so far; subscribed for the life of the process.
    pub result_topics: BTreeSet<String>,
}

impl Remote {
    /// Wait for task `task_id`'s result on `result_topic`. Returns true when that topic is new
    /// (it needs a subscription).
    pub fn ask(
        &mut self,
        task_id: u64,
        asked: Asked,
        result_topic: String,
        timeout: Duration,
    ) -> bool {
        let started = Instant::now();
        let deadline = started + timeout;
        let pending = Pending {
            asked,
            started,
            deadline,
        };
        self.pending.insert(task_id, pending);
        self.result_topics.insert(result_topic)
    }

    /// A message on a result topic: settle the task it answers, if it is ours.
    pub fn on_result(&mut self, payload: &[u8]) {
        let Ok(reply) = serde_json::from_slice::<lcm::Reply>(payload) else {
            return;
        };
        let Some(task_id) = reply.task_id.as_u64() else {
            return;
        };
        let Some(Pending {
            asked: p, started, ..
        }) = self.pending.remove(&task_id)
        else {
            return;
        };
        let error = (reply.code != 0).then(|| {
            let meaning = code::describe(reply.code).unwrap_or("the command failed");
            format!("node `{}` answered code {} ({meaning})", p.node, reply.code)
        });
        tracing::info!(
            rule = &*p.rule,
            action_id = task_id,
            node = p.node,
            code = reply.code,
            "remote command result"
        );
        p.reply.send(CommandResult {
            action_id: task_id,
            service: p.service,
            command: p.command,
            refusal: None,
            run: RunResult {
                code: i32::try_from(reply.code).ok(),
                signal: None,
                output: reply.message,
                error,
                timed_out: false,
                interrupted: false,
                duration: started.elapsed(),
            },
        });
    }

    /// Give up on tasks past their deadline.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Pending {
                asked: p, started, ..
            } = self.pending.remove(&id).expect("listed above");
            let waited = started.elapsed();
            tracing::warn!(
                rule = &*p.rule,
                action_id = id,
                node = p.node,
                "no result from the remote node within {waited:?}"
            );
            let mut outcome = CommandResult::error(
                id,
                p.service,
                p.command,
                format!("no result from node `{}` within {waited:?}", p.node),
            );
            outcome.run.timed_out = true;
            outcome.run.duration = waited;
            p.reply.send(outcome);
        }
    }

    /// Answer every task still waiting (medic is stopping), so each rule hears back before it
    /// is suspended. Returns how many there were.
    pub fn abandon(&mut self, why: &str) -> usize {
        let n = self.pending.len();
        for (
            id,
            Pending {
                asked: p, started, ..
            },
        ) in self.pending.drain()
        {
            let mut outcome = CommandResult::error(
                id,
                p.service,
                p.command,
                format!("no result from node `{}`: {why}", p.node),
            );
            outcome.run.duration = started.elapsed();
            p.reply.send(outcome);
        }
        n
    }
}
