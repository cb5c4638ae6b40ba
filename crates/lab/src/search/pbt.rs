//! Population-based training driven through the study (docs/search.md): `population` members
//! train in `generations` segments of `interval` steps. Each segment is one trial of the study
//! (attributes `pbt_member`, `pbt_generation`, `pbt_parent`); between generations
//! `attune_search::pbt::decide` says who copies whom, and a copying member's next segment
//! starts from the donor's run (`attune train --init-from`, or `restore_from` for a program)
//! with the explored hyper-parameters. The result is `pbt_schedule.json`: each member's
//! hyper-parameters per generation and the lineage of the final best member's weights.
//!
//! A resumed population reuses every finished segment it finds and decides again from them,
//! which gives the same decisions (they are keyed by seed, generation and member). Member
//! `m` starts at `Study::sample_initial(m)`, so no race between threads or processes decides
//! which member gets which starting point.
//!
//! In a shared study (`--storage`) the workers run the segments ([`next_segment`]): trial `n`
//! is member `n % P` of generation `n / P`, a generation starts when the previous one has
//! finished, and a segment whose worker died is re-queued and continues from its own last
//! checkpoint ([`claimed_segment`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use attune_search::pbt::{Action, Member, PbtConfig, Schedule, decide};
use attune_search::{Asked, Study, Summary, Trial, TrialState};
use serde_json::{Map, Value, json};

use super::driver::{DriverOptions, run_asked, run_pool, trial_dir};
use super::objective::{Objective, Segment};
use super::worker::{Next, open_trials};

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

/// The population as generation `g`'s finished segments left it; `None` while a member's
/// segment is missing or still running.
fn members_at(trials: &[Trial], dir: &Path, objective: &Objective, population: u64, g: u64) -> Option<Vec<Member>> {
    (0..population)
        .map(|m| {
            let t = stored(trials, m, g)?;
            Some(Member {
                id: m,
                params: t.params.clone(),
                value: t.values.as_ref().map(|v| v[0]),
                checkpoint: checkpoint_of(dir, objective, t),
            })
        })
        .collect()
}

/// What every member does in generation `g >= 1`, decided from generation `g - 1`'s members
/// (a pure function of them, the seed and `g`).
fn plans(study: &Study, settings: &PbtSettings, dir: &Path, members: &[Member], g: u64) -> Result<Vec<Plan>> {
    let (space, seed) = (study.space(), study.record().seed);
    let decisions = decide(space, space.directions[0], members, g, seed, &settings.config)?;
    Ok(decisions
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
                Action::Exploit { from, checkpoint, params } => {
                    Plan { member: d.member, params, parent: Some(from), restore_from: Some(dir.join(checkpoint)) }
                }
            }
        })
        .collect())
}

/// The attributes that make a trial `plan.member`'s segment of generation `g`; the starting
/// checkpoint is relative to the study's folder, which workers on other machines may mount
/// elsewhere.
fn segment_attrs(plan: &Plan, g: u64, dir: &Path) -> Map<String, Value> {
    let restore = plan.restore_from.as_ref().map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string());
    let mut attrs = Map::new();
    attrs.insert("pbt_member".into(), json!(plan.member));
    attrs.insert("pbt_generation".into(), json!(g));
    attrs.insert("pbt_parent".into(), json!(plan.parent));
    attrs.insert("pbt_restore_from".into(), json!(restore));
    attrs
}

fn segment(settings: &PbtSettings, member: u64, g: u64, restore_from: Option<PathBuf>, resume: bool) -> Segment {
    let interval = settings.config.interval;
    Segment { member, generation: g, until_step: (g + 1) * interval, interval, restore_from, resume }
}

fn check(settings: &PbtSettings) -> Result<()> {
    settings.config.validate()?;
    if settings.population < 2 || settings.generations < 1 {
        bail!("--pbt needs --population 2 or more and --generations 1 or more");
    }
    Ok(())
}

/// Runs the population in this process; returns the study's summary.
pub fn run_pbt(
    study: &Study,
    objective: &Objective,
    dir: &Path,
    opts: &DriverOptions,
    settings: &PbtSettings,
    export: &(dyn Fn(&Study) -> Result<()> + Sync),
) -> Result<Summary> {
    check(settings)?;
    let mut members: Vec<Member> = Vec::new();
    for g in 0..settings.generations {
        let plans: Vec<Plan> = if g == 0 {
            (0..settings.population)
                .map(|m| Ok(Plan { member: m, params: study.sample_initial(m)?, parent: None, restore_from: None }))
                .collect::<Result<_>>()?
        } else {
            plans(study, settings, dir, &members, g)?
        };
        run_pool(&plans, opts.parallel, |plan, w| {
            if stored(&study.trials()?, plan.member, g).is_some() {
                return Ok(());
            }
            let worker = format!("{}/{w}", opts.worker);
            let attrs = segment_attrs(plan, g, dir);
            let asked = study.enqueue(plan.params.clone(), &worker, &attrs)?;
            let segment = segment(settings, plan.member, g, plan.restore_from.clone(), false);
            let finish = run_asked(study, objective, dir, opts, &asked, Some(&segment), None)?;
            study.tell(asked.number, finish)?;
            export(study)
        })?;
        let trials = study.trials()?;
        members = members_at(&trials, dir, objective, settings.population, g)
            .with_context(|| format!("a member has no finished segment {g}"))?;
    }
    write_schedule(dir, study, objective, settings)?;
    export(study)?;
    Ok(study.summary()?)
}

/// The next segment a worker of a shared PBT study runs, by the study's trial count `n`:
/// trial `n` is member `n % P`'s segment of generation `n / P`. Generation 0's member `m`
/// starts at the sampler's `m`-th initial point (as in one process, whichever worker asks
/// first); a later generation waits until the previous one has finished, then takes its
/// member's decision (the same pure function as in one process). The trial is created only as
/// number `n` (the limit is `n + 1`), so workers racing for it create it once.
pub fn next_segment(
    study: &Study,
    objective: &Objective,
    dir: &Path,
    settings: &PbtSettings,
    worker: &str,
    lease: Duration,
) -> Result<Next> {
    check(settings)?;
    let p = settings.population;
    loop {
        let trials = study.trials()?;
        let n = trials.len() as u64;
        if n >= p * settings.generations {
            return Ok(if open_trials(study)? { Next::Wait } else { Next::Done });
        }
        let (g, m) = (n / p, n % p);
        let plan = if g == 0 {
            Plan { member: m, params: study.sample_initial(m)?, parent: None, restore_from: None }
        } else {
            let Some(members) = members_at(&trials, dir, objective, p, g - 1) else { return Ok(Next::Wait) };
            let all = plans(study, settings, dir, &members, g)?;
            all.into_iter().find(|plan| plan.member == m).with_context(|| format!("no decision for member {m}"))?
        };
        let attrs = segment_attrs(&plan, g, dir);
        if let Some(asked) = study.enqueue_leased(plan.params, worker, &attrs, lease, Some(n + 1))? {
            return Ok(Next::Run(asked, Some(segment(settings, m, g, plan.restore_from, false))));
        }
    }
}

/// The segment of a claimed (re-queued) trial, from the attributes it was created with; it
/// resumes from what it saved before its worker died.
pub fn claimed_segment(asked: &Asked, settings: &PbtSettings, dir: &Path) -> Result<Segment> {
    let number = asked.number;
    let get = |key: &str| asked.attrs.get(key).and_then(Value::as_u64);
    let (Some(member), Some(g)) = (get("pbt_member"), get("pbt_generation")) else {
        bail!("trial {number} of a PBT study has no pbt_member and pbt_generation attributes")
    };
    let restore = asked.attrs.get("pbt_restore_from").and_then(Value::as_str).map(|r| dir.join(r));
    Ok(segment(settings, member, g, restore, true))
}

/// Rebuilds the population's schedule from the stored segments (generation 0's members, then
/// each generation's decisions) and writes `pbt_schedule.json`.
pub fn write_schedule(dir: &Path, study: &Study, objective: &Objective, settings: &PbtSettings) -> Result<()> {
    let trials = study.trials()?;
    let p = settings.population;
    let first = members_at(&trials, dir, objective, p, 0).context("generation 0 has not finished")?;
    let mut schedule = Schedule::new(&first)?;
    let mut members = first;
    for g in 1..settings.generations {
        let space = study.space();
        schedule.record(g, &decide(space, space.directions[0], &members, g, study.record().seed, &settings.config)?)?;
        members =
            members_at(&trials, dir, objective, p, g).with_context(|| format!("generation {g} has not finished"))?;
    }
    schedule_file(dir, study, &schedule, &members)
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
fn schedule_file(dir: &Path, study: &Study, schedule: &Schedule, members: &[Member]) -> Result<()> {
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
