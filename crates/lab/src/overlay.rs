//! Dotted-key access to a serialisable config: `set` overlays one value (`model.d_model`,
//! `optimizer.lr`, `task.num_kv_pairs`) and `changes` lists the leaves two configs disagree on.
//!
//! Both work on the config's JSON form, so the keys are exactly the field names of the config
//! file and of `config.json`, and the config's own `Deserialize` checks every value: a flag, a
//! search space and `--resume` all go through the same door. docs/run-config.md lists the keys.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Replaces the value at dotted `key` in `cfg` by `value`.
///
/// The key must name a field the config has now (an unset optional field is `null` and counts);
/// an unknown key is an error listing the keys at that level, and a value of the wrong type is
/// the config's own deserialisation error, naming the key.
pub fn set<T: Serialize + DeserializeOwned>(cfg: &mut T, key: &str, value: Value) -> Result<()> {
    let mut root = serde_json::to_value(&*cfg).context("serialising the config")?;
    let mut node = &mut root;
    let mut path = String::new();
    for part in key.split('.') {
        let here = if path.is_empty() { "the config".to_string() } else { format!("'{path}'") };
        let Value::Object(map) = node else {
            bail!("unknown key '{key}': {here} is {node}, not a table of settings");
        };
        if !map.contains_key(part) {
            bail!("unknown key '{key}': {here} has no '{part}' (it has {})", keys(map));
        }
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
        node = map.get_mut(part).unwrap_or_else(|| unreachable!("checked above"));
    }
    *node = value;
    *cfg = serde_json::from_value(root).with_context(|| format!("'{key}' cannot take that value"))?;
    Ok(())
}

fn keys(map: &Map<String, Value>) -> String {
    map.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// One setting two configs disagree on.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Dotted key (`train.seed`); a whole table when only one side has it.
    pub key: String,
    /// The value in the first config (`null` when absent).
    pub old: Value,
    /// The value in the second.
    pub new: Value,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.old, self.new)
    }
}

/// Every leaf where `old` and `new` differ, as dotted keys in a stable order.
pub fn changes<T: Serialize>(old: &T, new: &T) -> Result<Vec<Change>> {
    let (a, b) = (serde_json::to_value(old)?, serde_json::to_value(new)?);
    let mut out = Vec::new();
    diff(String::new(), &a, &b, &mut out);
    Ok(out)
}

fn diff(key: String, a: &Value, b: &Value, out: &mut Vec<Change>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut names: Vec<&String> = x.keys().chain(y.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let sub = if key.is_empty() { name.clone() } else { format!("{key}.{name}") };
                diff(sub, x.get(name).unwrap_or(&Value::Null), y.get(name).unwrap_or(&Value::Null), out);
            }
        }
        _ if a != b => out.push(Change { key, old: a.clone(), new: b.clone() }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use serde_json::json;

    #[test]
    fn set_reaches_nested_fields_and_names_unknown_keys() {
        let mut cfg = RunConfig::default();
        set(&mut cfg, "model.d_model", json!(64)).unwrap();
        set(&mut cfg, "optimizer.lr", json!(0.01)).unwrap();
        set(&mut cfg, "task.num_kv_pairs", json!(4)).unwrap();
        set(&mut cfg, "model.n_kv_heads", json!(1)).unwrap();
        assert_eq!((cfg.model.d_model, cfg.optimizer.lr(), cfg.model.n_kv_heads), (64, 0.01, Some(1)));
        let crate::tasks::TaskConfig::Mqar(m) = &cfg.task else { panic!("task changed") };
        assert_eq!(m.num_kv_pairs, 4);

        let err = format!("{:#}", set(&mut cfg, "model.d_modle", json!(1)).unwrap_err());
        assert!(err.contains("model.d_modle") && err.contains("d_model"), "{err}");
        let err = format!("{:#}", set(&mut cfg, "model.d_model.x", json!(1)).unwrap_err());
        assert!(err.contains("'model.d_model' is 64"), "{err}");
        let err = format!("{:#}", set(&mut cfg, "train.steps", json!("many")).unwrap_err());
        assert!(err.contains("train.steps"), "{err}");
        assert_eq!(cfg.train.steps, RunConfig::default().train.steps, "a failed set leaves the config as it was");
    }

    #[test]
    fn changes_lists_each_differing_leaf() {
        let a = RunConfig::default();
        let mut b = a.clone();
        b.train.seed = 7;
        b.model.dropout = 0.25;
        b.train.clip_grad_norm = None;
        let got: Vec<String> = changes(&a, &b).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(got, ["model.dropout: 0.0 -> 0.25", "train.clip_grad_norm: 1.0 -> null", "train.seed: 0 -> 7"]);
        assert!(changes(&a, &a).unwrap().is_empty());
    }
}
