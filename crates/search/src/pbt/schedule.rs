//! The hyper-parameter schedule a PBT run produced: one entry per member per generation, and
//! for any member the chain of parameters its final weights were trained with, following the
//! copies back through the population.

use serde::{Deserialize, Serialize};

use super::{Action, Decision, Member};
use crate::error::{Result, SearchError};

/// What one member trained with from one generation on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    /// The member.
    pub member: u64,
    /// The generation (0: the start).
    pub generation: u64,
    /// The parameters it trains with from this generation's ready point to the next.
    pub params: Vec<f64>,
    /// The member whose weights it loaded at this ready point (`None`: it kept its own).
    pub parent: Option<u64>,
}

/// One step of a lineage: during generation `generation` the weights were trained by `member`
/// with `params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineageStep {
    /// The generation.
    pub generation: u64,
    /// The member that trained the weights then.
    pub member: u64,
    /// Its parameters then.
    pub params: Vec<f64>,
}

/// Every member's parameters at every generation, built from the decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    entries: Vec<ScheduleEntry>,
}

fn schedule_error(problem: String, fix: &str) -> SearchError {
    SearchError::config("pbt schedule", problem, fix)
}

impl Schedule {
    /// The schedule of a population at its start (generation 0).
    pub fn new(members: &[Member]) -> Result<Schedule> {
        if members.is_empty() {
            return Err(schedule_error("the population is empty".into(), "start it with at least one member"));
        }
        let mut entries: Vec<ScheduleEntry> = Vec::with_capacity(members.len());
        for m in members {
            if entries.iter().any(|e| e.member == m.id) {
                return Err(schedule_error(format!("member id {} appears twice", m.id), "give ids once each"));
            }
            entries.push(ScheduleEntry { member: m.id, generation: 0, params: m.params.clone(), parent: None });
        }
        Ok(Schedule { entries })
    }

    /// The latest generation recorded.
    pub fn last_generation(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.generation)
    }

    /// Every entry, by generation, then in the order the members were given.
    pub fn entries(&self) -> &[ScheduleEntry] {
        &self.entries
    }

    /// The entry of `member` at `generation`.
    pub fn entry(&self, member: u64, generation: u64) -> Option<&ScheduleEntry> {
        self.entries.iter().find(|e| e.member == member && e.generation == generation)
    }

    /// Records generation `generation`'s decisions: it must follow the last one recorded, and
    /// name every member once, with donors from the population.
    pub fn record(&mut self, generation: u64, decisions: &[Decision]) -> Result<()> {
        let last = self.last_generation();
        if generation != last + 1 {
            return Err(schedule_error(
                format!("generation {generation} recorded after generation {last}"),
                format!("record generation {} next", last + 1).as_str(),
            ));
        }
        let previous: Vec<ScheduleEntry> = self.entries.iter().filter(|e| e.generation == last).cloned().collect();
        let named = |id: u64| decisions.iter().filter(|d| d.member == id).count();
        if let Some(e) = previous.iter().find(|e| named(e.member) != 1) {
            return Err(schedule_error(
                format!("generation {generation} decides member {} {} times", e.member, named(e.member)),
                "pass one decision per member",
            ));
        }
        if decisions.len() != previous.len() {
            return Err(schedule_error(
                format!("{} decisions for {} members", decisions.len(), previous.len()),
                "decide only for the population's members",
            ));
        }
        // Every entry is checked before any is stored, so a refused generation leaves no trace.
        let mut next = Vec::with_capacity(previous.len());
        for e in previous {
            let decision = decisions.iter().find(|d| d.member == e.member).map(|d| &d.action);
            let (params, parent) = match decision {
                Some(Action::Exploit { from, params, .. }) => {
                    if self.entry(*from, last).is_none() {
                        return Err(schedule_error(
                            format!("member {} copies {from}, which is not in the population", e.member),
                            "copy only from members",
                        ));
                    }
                    (params.clone(), Some(*from))
                }
                _ => (e.params.clone(), None),
            };
            next.push(ScheduleEntry { member: e.member, generation, params, parent });
        }
        self.entries.extend(next);
        Ok(())
    }

    /// The parameters `member`'s latest weights were trained with, generation 0 first:
    /// following each copy back to the member whose weights were loaded.
    pub fn lineage(&self, member: u64) -> Result<Vec<LineageStep>> {
        let last = self.last_generation();
        let mut current = member;
        let mut steps = Vec::with_capacity(last as usize + 1);
        for generation in (0..=last).rev() {
            let entry = self.entry(current, generation).ok_or_else(|| {
                schedule_error(format!("member {current} has no entry at generation {generation}"), "ask for a member")
            })?;
            steps.push(LineageStep { generation, member: current, params: entry.params.clone() });
            // The weights at this ready point came from the parent's training before it.
            current = entry.parent.unwrap_or(current);
        }
        steps.reverse();
        Ok(steps)
    }
}
