//! Search spaces: named parameters with float (linear or log, optional step), int (step, log)
//! or categorical distributions, declared in TOML (docs/search.md) and validated with errors
//! that name the file, the field and the fix.
//!
//! Samplers work on an internal `f64` per parameter, in the space's order (sorted by name):
//! the value itself for floats and ints, the choice's index for categoricals. [`Distribution::to_unit`]
//! and [`Distribution::from_unit`] map that to and from `[0, 1]` (log-aware), which is where
//! the generic samplers (random, GA, SA, the controller) move.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Result, SearchError};

/// Whether an objective is to be made small or large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smaller is better.
    Minimize,
    /// Larger is better.
    Maximize,
}

impl Direction {
    /// `value` as a loss: smaller is better whatever the direction.
    pub fn loss(self, value: f64) -> f64 {
        match self {
            Direction::Minimize => value,
            Direction::Maximize => -value,
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        self.loss(a) < self.loss(b)
    }
}

/// One parameter's distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Distribution {
    /// A real number in `[low, high]`, uniform in `x` or (with `log`) in `ln x`; with `step`,
    /// only `low + k * step`.
    Float {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
        /// Uniform in the logarithm.
        #[serde(default)]
        log: bool,
        /// Grid spacing (not with `log`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<f64>,
    },
    /// An integer `low + k * step` in `[low, high]`, optionally uniform in the logarithm.
    Int {
        /// Smallest value.
        low: i64,
        /// Largest value.
        high: i64,
        /// Spacing (1 by default).
        #[serde(default = "one")]
        step: i64,
        /// Uniform in the logarithm (step must be 1).
        #[serde(default)]
        log: bool,
    },
    /// One of a list of values (strings, numbers or booleans).
    Categorical {
        /// The values, at least one.
        choices: Vec<Value>,
    },
}

/// The largest magnitude an int parameter (or a stepped float's step count) may have: the
/// study stores values as f64, exact up to 2^53.
const MAX_EXACT: u64 = 1 << 53;

fn one() -> i64 {
    1
}

impl Distribution {
    /// How many distinct values the distribution has (`None` for a continuous float).
    pub fn cardinality(&self) -> Option<u64> {
        match self {
            Distribution::Float { step: None, .. } => None,
            Distribution::Float { low, high, step: Some(s), .. } => Some(((high - low) / s + 1e-9).floor() as u64 + 1),
            Distribution::Int { low, high, step, .. } => Some(((high - low) / step) as u64 + 1),
            Distribution::Categorical { choices } => Some(choices.len() as u64),
        }
    }

    /// Whether the value is a categorical index (no order between values).
    pub fn is_categorical(&self) -> bool {
        matches!(self, Distribution::Categorical { .. })
    }

    /// Whether the distribution is uniform in the logarithm.
    pub fn is_log(&self) -> bool {
        matches!(self, Distribution::Float { log: true, .. } | Distribution::Int { log: true, .. })
    }

    /// Maps an internal value to `[0, 1]`: linear or logarithmic for numbers (ints and stepped
    /// floats use the centre of their cell, `(k + 0.5) / n`), `(index + 0.5) / n` for choices.
    pub fn to_unit(&self, x: f64) -> f64 {
        let u = match self {
            Distribution::Float { low, high, log: true, .. } => (x.ln() - low.ln()) / (high.ln() - low.ln()),
            Distribution::Float { low, high, step: None, .. } => (x - low) / (high - low),
            Distribution::Int { low, high, log: true, .. } => {
                let (lo, hi) = (*low as f64 - 0.5, *high as f64 + 0.5);
                (x.ln() - lo.ln()) / (hi.ln() - lo.ln())
            }
            _ => {
                let n = self.cardinality().unwrap_or(1) as f64;
                (self.index_of(x) as f64 + 0.5) / n
            }
        };
        if u.is_finite() { u.clamp(0.0, 1.0) } else { 0.5 }
    }

    /// The internal value at `u` in `[0, 1]` (clamped), snapped to a valid value.
    pub fn from_unit(&self, u: f64) -> f64 {
        let u = if u.is_finite() { u.clamp(0.0, 1.0) } else { 0.5 };
        match self {
            Distribution::Float { low, high, log: true, .. } => {
                (low.ln() + u * (high.ln() - low.ln())).exp().clamp(*low, *high)
            }
            Distribution::Float { low, high, step: None, .. } => (low + u * (high - low)).clamp(*low, *high),
            Distribution::Int { low, high, log: true, .. } => {
                let (lo, hi) = (*low as f64 - 0.5, *high as f64 + 0.5);
                self.snap((lo.ln() + u * (hi.ln() - lo.ln())).exp())
            }
            _ => {
                let n = self.cardinality().unwrap_or(1);
                let k = ((u * n as f64).floor() as u64).min(n - 1);
                self.value_at(k)
            }
        }
    }

    /// The `k`-th value of a discrete distribution (clamped to the last).
    pub fn value_at(&self, k: u64) -> f64 {
        let k = k.min(self.cardinality().unwrap_or(1).saturating_sub(1));
        match self {
            Distribution::Float { low, step: Some(s), .. } => low + k as f64 * s,
            Distribution::Int { low, step, .. } => (*low + k as i64 * step) as f64,
            Distribution::Categorical { .. } => k as f64,
            Distribution::Float { low, high, .. } => low + (high - low) * 0.5,
        }
    }

    /// The index of the discrete value nearest `x` (0 for a continuous float).
    pub fn index_of(&self, x: f64) -> u64 {
        let n = self.cardinality().unwrap_or(1);
        let k = match self {
            Distribution::Float { low, step: Some(s), .. } => ((x - low) / s).round(),
            Distribution::Int { low, step, .. } => ((x - *low as f64) / *step as f64).round(),
            Distribution::Categorical { .. } => x.round(),
            Distribution::Float { .. } => 0.0,
        };
        if k.is_finite() { (k.max(0.0) as u64).min(n - 1) } else { 0 }
    }

    /// `x` moved to the nearest valid value (in range, on the step, a whole index).
    pub fn snap(&self, x: f64) -> f64 {
        match self {
            Distribution::Float { low, high, step: None, .. } => {
                if x.is_finite() {
                    x.clamp(*low, *high)
                } else {
                    self.from_unit(0.5)
                }
            }
            _ => self.value_at(self.index_of(x)),
        }
    }

    /// Whether `x` is a valid internal value.
    pub fn contains(&self, x: f64) -> bool {
        x.is_finite() && self.snap(x) == x
    }

    /// The value a program or a train config sees: a float, an integer or the choice itself.
    pub fn external(&self, x: f64) -> Value {
        match self {
            Distribution::Float { .. } => serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null),
            Distribution::Int { .. } => Value::from(x.round() as i64),
            Distribution::Categorical { choices } => choices[self.index_of(x) as usize].clone(),
        }
    }

    /// The internal value of an external one (`None` when it is not in the distribution).
    pub fn internal(&self, v: &Value) -> Option<f64> {
        let x = match self {
            Distribution::Categorical { choices } => choices.iter().position(|c| c == v)? as f64,
            _ => v.as_f64()?,
        };
        self.contains(x).then_some(x)
    }
}

/// A named parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// The parameter's name: a dotted train-config key or any name a program reads.
    pub name: String,
    /// Its distribution.
    #[serde(flatten)]
    pub dist: Distribution,
}

/// The parameters of a study, sorted by name, and the objectives' directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    /// The parameters, sorted by name.
    pub params: Vec<Param>,
    /// One direction per objective.
    pub directions: Vec<Direction>,
}

impl Space {
    /// Parses and validates a space file's text; `source_name` names it in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Space> {
        let err = |field: &str, problem: String, fix: &str| SearchError::Space {
            source_name: source_name.to_string(),
            field: field.to_string(),
            problem,
            fix: fix.to_string(),
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err("(file)", format!("not valid TOML: {}", e.message()), "see docs/search.md for the format")
        })?;
        for key in table.keys() {
            if !["direction", "directions", "params"].contains(&key.as_str()) {
                return Err(err(key, "unknown top-level key".into(), "use direction, directions and [params]"));
            }
        }
        let directions = match (table.get("direction"), table.get("directions")) {
            (Some(_), Some(_)) => {
                return Err(err("direction", "both direction and directions given".into(), "keep one"));
            }
            (None, None) => vec![Direction::Minimize],
            (Some(d), None) => vec![parse_direction(d).ok_or_else(|| {
                err("direction", format!("{d} is not a direction"), "use \"minimize\" or \"maximize\"")
            })?],
            (None, Some(toml::Value::Array(ds))) if !ds.is_empty() => ds
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    parse_direction(d).ok_or_else(|| {
                        err(
                            &format!("directions[{i}]"),
                            format!("{d} is not a direction"),
                            "use \"minimize\" or \"maximize\"",
                        )
                    })
                })
                .collect::<Result<_>>()?,
            (None, Some(d)) => {
                return Err(err(
                    "directions",
                    format!("{d} is not a non-empty list"),
                    "e.g. directions = [\"maximize\", \"minimize\"]",
                ));
            }
        };
        let Some(toml::Value::Table(params)) = table.get("params") else {
            return Err(err(
                "params",
                "missing or not a table".into(),
                "add a [params] table with one entry per parameter",
            ));
        };
        if params.is_empty() {
            return Err(err("params", "no parameters".into(), "declare at least one parameter under [params]"));
        }
        let mut out = Vec::new();
        for (name, spec) in params {
            let field = format!("params.{name}");
            let toml::Value::Table(spec) = spec else {
                return Err(err(
                    &field,
                    format!("{spec} is not a table"),
                    "write e.g. { type = \"float\", low = 0.0, high = 1.0 }",
                ));
            };
            let dist =
                parse_distribution(spec).map_err(|(sub, problem, fix)| err(&format!("{field}{sub}"), problem, &fix))?;
            out.push(Param { name: name.clone(), dist });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Space { params: out, directions })
    }

    /// Reads and validates a space file.
    pub fn from_file(path: &std::path::Path) -> Result<Space> {
        let text = std::fs::read_to_string(path).map_err(|e| SearchError::Space {
            source_name: path.display().to_string(),
            field: "(file)".into(),
            problem: format!("cannot read it: {e}"),
            fix: "give the path of a TOML space file".into(),
        })?;
        Space::from_toml(&text, &path.display().to_string())
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the space has no parameters (never true for a parsed space).
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The parameters as a program sees them: `{name: value}`.
    pub fn external(&self, x: &[f64]) -> Map<String, Value> {
        self.params.iter().zip(x).map(|(p, &v)| (p.name.clone(), p.dist.external(v))).collect()
    }

    /// The internal values of external parameters (every parameter must be present and valid).
    pub fn internal(&self, values: &Map<String, Value>) -> Result<Vec<f64>> {
        self.params
            .iter()
            .map(|p| {
                let v = values.get(&p.name).ok_or_else(|| {
                    SearchError::config(
                        "params",
                        format!("'{}' is missing", p.name),
                        "give every parameter of the space",
                    )
                })?;
                p.dist.internal(v).ok_or_else(|| {
                    SearchError::config(
                        "params",
                        format!("{v} is not a value of '{}' ({:?})", p.name, p.dist),
                        "give a value inside the declared range",
                    )
                })
            })
            .collect()
    }

    /// Every parameter snapped to a valid value.
    pub fn snap(&self, x: &[f64]) -> Vec<f64> {
        self.params.iter().zip(x).map(|(p, &v)| p.dist.snap(v)).collect()
    }

    /// The point at unit coordinates `u`.
    pub fn from_unit(&self, u: &[f64]) -> Vec<f64> {
        self.params.iter().zip(u).map(|(p, &v)| p.dist.from_unit(v)).collect()
    }

    /// The unit coordinates of `x`.
    pub fn to_unit(&self, x: &[f64]) -> Vec<f64> {
        self.params.iter().zip(x).map(|(p, &v)| p.dist.to_unit(v)).collect()
    }
}

fn parse_direction(v: &toml::Value) -> Option<Direction> {
    match v.as_str()? {
        "minimize" | "min" => Some(Direction::Minimize),
        "maximize" | "max" => Some(Direction::Maximize),
        _ => None,
    }
}

type FieldError = (String, String, String);

fn parse_distribution(spec: &toml::Table) -> std::result::Result<Distribution, FieldError> {
    let fe = |sub: &str, problem: String, fix: &str| (format!(".{sub}"), problem, fix.to_string());
    let kind = spec
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| fe("type", "missing".into(), "add type = \"float\", \"int\" or \"categorical\""))?;
    let allowed: &[&str] = match kind {
        "float" => &["type", "low", "high", "log", "step"],
        "int" => &["type", "low", "high", "log", "step"],
        "categorical" => &["type", "choices"],
        other => {
            return Err(fe("type", format!("unknown type \"{other}\""), "use \"float\", \"int\" or \"categorical\""));
        }
    };
    if let Some(k) = spec.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(fe(k, format!("not a field of a {kind} parameter"), &format!("use only {}", allowed.join(", "))));
    }
    let log = match spec.get("log") {
        None => false,
        Some(v) => {
            v.as_bool().ok_or_else(|| fe("log", format!("{v} is not a boolean"), "write log = true or log = false"))?
        }
    };
    match kind {
        "float" => {
            let num = |k: &str| -> std::result::Result<f64, FieldError> {
                match spec.get(k) {
                    Some(toml::Value::Float(f)) => Ok(*f),
                    Some(toml::Value::Integer(i)) => Ok(*i as f64),
                    Some(v) => Err(fe(k, format!("{v} is not a number"), "write a number")),
                    None => Err(fe(k, "missing".into(), "give low and high")),
                }
            };
            let (low, high) = (num("low")?, num("high")?);
            if !low.is_finite() || !high.is_finite() {
                return Err(fe("low", format!("the range [{low}, {high}] is not finite"), "give finite bounds"));
            }
            if low >= high {
                return Err(fe("low", format!("low {low} >= high {high}"), "make low smaller than high"));
            }
            if !(high - low).is_finite() {
                return Err(fe(
                    "high",
                    format!("the width of [{low}, {high}] is not a finite number"),
                    "narrow the range",
                ));
            }
            if log && low <= 0.0 {
                return Err(fe(
                    "low",
                    format!("a log range must be positive, low is {low}"),
                    "raise low above 0 or drop log",
                ));
            }
            let step = match spec.get("step") {
                None => None,
                Some(_) => {
                    let s = num("step")?;
                    if log || s.is_nan() || s <= 0.0 || s > high - low || (high - low) / s > MAX_EXACT as f64 {
                        return Err(fe(
                            "step",
                            format!("step {s} is not usable here"),
                            "give 0 < step <= high - low, without log",
                        ));
                    }
                    Some(s)
                }
            };
            Ok(Distribution::Float { low, high, log, step })
        }
        "int" => {
            let int = |k: &str| -> std::result::Result<i64, FieldError> {
                match spec.get(k) {
                    Some(toml::Value::Integer(i)) => Ok(*i),
                    Some(v) => Err(fe(k, format!("{v} is not an integer"), "write a whole number")),
                    None => Err(fe(k, "missing".into(), "give low and high")),
                }
            };
            let (low, high) = (int("low")?, int("high")?);
            // Values are stored as f64, exact only up to 2^53.
            if low.unsigned_abs() > MAX_EXACT || high.unsigned_abs() > MAX_EXACT {
                return Err(fe(
                    "low",
                    format!("the range [{low}, {high}] reaches past 2^53"),
                    "keep both bounds within +-9007199254740992",
                ));
            }
            if low >= high {
                return Err(fe("low", format!("low {low} >= high {high}"), "make low smaller than high"));
            }
            if log && low <= 0 {
                return Err(fe(
                    "low",
                    format!("a log range must be positive, low is {low}"),
                    "raise low to 1 or more, or drop log",
                ));
            }
            let step = if spec.contains_key("step") { int("step")? } else { 1 };
            if step < 1 || step > high - low || (log && step != 1) {
                return Err(fe(
                    "step",
                    format!("step {step} is not usable here"),
                    "give 1 <= step <= high - low (1 with log)",
                ));
            }
            Ok(Distribution::Int { low, high, step, log })
        }
        _ => {
            let Some(toml::Value::Array(items)) = spec.get("choices") else {
                return Err(fe("choices", "missing or not a list".into(), "write choices = [\"a\", \"b\"]"));
            };
            if items.is_empty() {
                return Err(fe("choices", "the list is empty".into(), "give at least one choice"));
            }
            let mut choices = Vec::new();
            for (i, c) in items.iter().enumerate() {
                let v = match c {
                    toml::Value::String(s) => Value::from(s.clone()),
                    toml::Value::Integer(n) => Value::from(*n),
                    toml::Value::Float(f) if f.is_finite() => Value::from(*f),
                    toml::Value::Boolean(b) => Value::from(*b),
                    other => {
                        return Err(fe(
                            &format!("choices[{i}]"),
                            format!("{other} is not a string, number or boolean"),
                            "use plain values",
                        ));
                    }
                };
                if choices.contains(&v) {
                    return Err(fe(&format!("choices[{i}]"), format!("{v} is listed twice"), "list each choice once"));
                }
                choices.push(v);
            }
            Ok(Distribution::Categorical { choices })
        }
    }
}
