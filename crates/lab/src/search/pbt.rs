//! Population-based training driven through the study (docs/search.md): `population` members
//! train in `generations` segments of `interval` steps. Each segment is one trial of the study
//! (attributes `pbt_member`, `pbt_generation`, `pbt_parent`); between generations
//! `attune_search::pbt::decide` says who copies whom, and a copying member's next segment
//! starts from the donor's run (`attune train --init-from`, or `restore_from` for a program)
//! with the explored hyper-parameters. The result is `pbt_schedule.json`: each member's
//! hyper-parameters per generation and the lineage of the final best member's weights.
//!
//! A resumed population reuses every finished segment it finds and decides again from them,
//! which gives the same decisions (they are keyed by seed, generation and member).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use attune_search::pbt::{Action, Member, PbtConfig, Schedule, decide};
use attune_search::{Study, Summary, Trial, TrialState};
use serde_json::{Map, Value, json};

use super::driver::{DriverOptions, run_asked, run_pool, trial_dir};
use super::objective::{Objective, Segment};

/// PBT's settings as stored with the study.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PbtSettings {
    /// Members.
    pub population: u64,
    /// Segments per member.
    pub generations: u64,
    /// Exploit/explore settings (`interval` is the steps per segment).
    pub config: PbtConfig,
}

/// What one member does in one generation.
struct Plan {
    member: u64,
    params: Vec<f64>,
    parent: Option<u64>,
    restore_from: Option<PathBuf>,
}

fn attr_u64(t: &Trial, key: &str) -> Option<u64> {
    t.attrs.get(key).and_then(Value::as_u64)
}

/// The finished segment of `member` in `generation`, if one is stored.
fn stored(trials: &[Trial], member: u64, generation: u64) -> Option<&Trial> {
    trials.iter().find(|t| {
        t.state.is_finished()
            && attr_u64(t, "pbt_member") == Some(member)
            && attr_u64(t, "pbt_generation") == Some(generation)
            && !(t.state == TrialState::Failed && t.error.as_deref().is_some_and(|e| e.starts_with("lost:")))
    })
}

/// Runs the population; returns the study's summary.
pub fn run_pbt(
    study: &Study,
    objective: &Objective,
    dir: &Path,
    opts: &DriverOptions,
    settings: &PbtSettings,
    export: &(dyn Fn(&Study) -> Result<()> + Sync),
) -> Result<Summary> {
    settings.config.validate()?;
    if settings.population < 2 || settings.generations < 1 {
        bail!("--pbt needs --population 2 or more and --generations 1 or more");
    }
    let space = study.space().clone();
    let direction = space.directions[0];
    let seed = study.record().seed;
    let mut members: Vec<Member> = Vec::new();
    let mut schedule: Option<Schedule> = None;
    for g in 0..settings.generations {
        let plans: Vec<Plan> = if g == 0 {
            (0..settings.population)
                .map(|m| Plan { member: m, params: Vec::new(), parent: None, restore_from: None })
                .collect()
        } else {
            let decisions = decide(&space, direction, &members, g, seed, &settings.config)?;
            if let Some(s) = &mut schedule {
                s.record(g, &decisions)?;
            }
            decisions
                .into_iter()
                .map(|d| {
                    let own = &members[d.member as usize];
                    match d.action {
                        Action::Continue => Plan {
                            member: d.member,
                            params: own.params.clone(),
                            parent: None,
                            restore_from: Some(dir.join(&own.checkpoint)),
                        },
                        Action::Exploit { from, checkpoint, params } => Plan {
                            member: d.member,
                            params,
                            parent: Some(from),
                            restore_from: Some(dir.join(checkpoint)),
                        },
                    }
                })
                .collect()
        };
        let until_step = (g + 1) * settings.config.interval;
        run_pool(&plans, opts.parallel, |plan, w| {
            if stored(&study.trials()?, plan.member, g).is_some() {
                return Ok(());
            }
            let worker = format!("{}/{w}", opts.worker);
            let mut attrs = Map::new();
            attrs.insert("pbt_member".into(), json!(plan.member));
            attrs.insert("pbt_generation".into(), json!(g));
            attrs.insert("pbt_parent".into(), json!(plan.parent));
            let asked = if g == 0 {
                let a = study.ask(&worker)?;
                for (k, v) in &attrs {
                    study.storage().set_attr(a.number, k, v)?;
                }
                a
            } else {
                study.enqueue(plan.params.clone(), &worker, &attrs)?
            };
            let segment = Segment {
                member: plan.member,
                generation: g,
                until_step,
                interval: settings.config.interval,
                restore_from: plan.restore_from.clone(),
            };
            let finish = run_asked(study, objective, dir, opts, &asked, Some(&segment), None)?;
            study.tell(asked.number, finish)?;
            export(study)
        })?;
        let trials = study.trials()?;
        members = (0..settings.population)
            .map(|m| {
                let t = stored(&trials, m, g).with_context(|| format!("member {m} has no finished segment {g}"))?;
                Ok(Member {
                    id: m,
                    params: t.params.clone(),
                    value: t.values.as_ref().map(|v| v[0]),
                    checkpoint: checkpoint_of(dir, objective, t),
                })
            })
            .collect::<Result<_>>()?;
        if g == 0 {
            schedule = Some(Schedule::new(&members)?);
        }
    }
    let schedule = schedule.context("no generation ran")?;
    write_schedule(dir, study, &schedule, &members)?;
    export(study)?;
    Ok(study.summary()?)
}

/// Where a segment's weights are, relative to the study directory: the training run, or the
/// trial's folder a program saved into.
fn checkpoint_of(dir: &Path, objective: &Objective, t: &Trial) -> String {
    let folder = match objective {
        Objective::Train { .. } => trial_dir(dir, t.number).join("run"),
        Objective::Command { .. } => trial_dir(dir, t.number),
    };
    folder.strip_prefix(dir).unwrap_or(&folder).display().to_string()
}

/// `pbt_schedule.json`: every member's parameters per generation (with the member it copied),
/// and the lineage of the best final member's weights.
fn write_schedule(dir: &Path, study: &Study, schedule: &Schedule, members: &[Member]) -> Result<()> {
    let space = study.space();
    let d = space.directions[0];
    let best = members
        .iter()
        .filter(|m| m.value.is_some_and(f64::is_finite))
        .min_by(|a, b| d.loss(a.value.unwrap_or(0.0)).total_cmp(&d.loss(b.value.unwrap_or(0.0))));
    let entries: Vec<Value> = schedule
        .entries()
        .iter()
        .map(|e| json!({"member": e.member, "generation": e.generation, "parent": e.parent, "params": space.external(&e.params)}))
        .collect();
    let lineage = match best {
        Some(b) => schedule
            .lineage(b.id)?
            .into_iter()
            .map(|s| json!({"generation": s.generation, "member": s.member, "params": space.external(&s.params)}))
            .collect(),
        None => Vec::new(),
    };
    let out = json!({
        "best_member": best.map(|b| b.id),
        "best_value": best.and_then(|b| b.value),
        "best_lineage": lineage,
        "entries": entries,
    });
    attune_persist::write_atomic(&dir.join("pbt_schedule.json"), serde_json::to_string_pretty(&out)?.as_bytes())?;
    Ok(())
}
