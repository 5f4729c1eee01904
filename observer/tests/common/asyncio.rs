//! Reading the asyncio part of a report: tasks, their frames, await cycles.

use serde_json::Value;

pub fn tasks(asyncio: &Value) -> Vec<&Value> {
    asyncio["loops"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .flat_map(|l| l["tasks"].as_array().unwrap().iter())
                .collect()
        })
        .unwrap_or_default()
}

pub fn task<'a>(asyncio: &'a Value, name: &str) -> &'a Value {
    tasks(asyncio)
        .into_iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name}: {asyncio:#}"))
}

/// The innermost frame of a task's chain in the program (not asyncio's).
pub fn user_frame<'a>(t: &'a Value, fixture: &str) -> &'a Value {
    t["chain"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|f| {
            f["file"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{fixture}.py"))
        })
        .unwrap_or_else(|| panic!("no frame in {fixture}.py: {t:#}"))
}

pub fn await_cycle(findings: &Value) -> &Value {
    let dl: Vec<&Value> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "deadlock")
        .collect();
    assert_eq!(dl.len(), 1, "one deadlock: {findings:#}");
    dl[0]
}

/// The asyncio view of the finding's process in a `run` report: the one
/// read when the cycle was seen.
pub fn asyncio_of<'a>(r: &'a Value, f: &Value) -> &'a Value {
    let p = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tgid"] == f["tgid"])
        .unwrap();
    &p["asyncio"]
}

/// Every task in `names` is suspended at `line` in a dump.
pub fn all_at(r: &Value, names: [&str; 2], line: u64) -> bool {
    names.iter().all(|n| {
        tasks(&r["processes"][0]["asyncio"])
            .iter()
            .any(|t| t["name"] == *n && t["chain"][0]["line"] == line)
    })
}
