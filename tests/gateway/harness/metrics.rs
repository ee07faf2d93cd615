//! The one reader of `/metrics`: a strict parser of the Prometheus text exposition format
//! (0.0.4). A scrape that does not parse fails the test that made it.

use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// family name → type
    pub types: HashMap<String, String>,
    /// family name → help text
    pub help: HashMap<String, String>,
}

impl Exposition {
    /// The value of the series `name` whose labels are exactly `labels` (any order).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
    }

    /// Like [`Exposition::get`] but 0 when the series is absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Sum over the series of `name` that carry at least `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses `name{a="b",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let chars: Vec<char> = r.chars().collect();
        let mut i = 0;
        loop {
            if i < chars.len() && chars[i] == '}' {
                i += 1;
                break;
            }
            let start = i;
            while i < chars.len() && chars[i] != '=' {
                i += 1;
            }
            let lname: String = chars[start..i].iter().collect();
            if !valid_label_name(&lname) {
                return Err(format!("bad label name {lname:?} in {line:?}"));
            }
            if i + 1 >= chars.len() || chars[i + 1] != '"' {
                return Err(format!("label value not quoted in {line:?}"));
            }
            i += 2;
            let mut value = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => return Err(format!("bad escape {other:?} in {line:?}")),
                        }
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            if labels.iter().any(|(n, _): &(String, String)| *n == lname) {
                return Err(format!("duplicate label {lname} in {line:?}"));
            }
            labels.push((lname, value));
            match chars.get(i) {
                Some(',') => i += 1,
                Some('}') => {}
                _ => return Err(format!("expected , or }} in {line:?}")),
            }
        }
        let consumed: String = chars[..i].iter().collect();
        rest = &r[consumed.len()..];
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("expected a space before the value in {line:?}"))?;
    let mut fields = rest.split(' ');
    let value = parse_value(fields.next().unwrap_or(""))?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp in {line:?}"))?;
    }
    if fields.next().is_some() {
        return Err(format!("trailing fields in {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The family a sample belongs to, given the declared types.
fn family_of(name: &str, types: &HashMap<String, String>) -> String {
    if types.contains_key(name) {
        return name.to_string();
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Parses and validates a whole exposition: line syntax, `# HELP`/`# TYPE` placement and
/// uniqueness, contiguous families, no duplicate series, non-negative counters, and for
/// histograms ascending `le` buckets with non-decreasing counts, `+Inf` equal to `_count`, and a
/// `_sum`.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut ex = Exposition::default();
    let mut seen_families: Vec<String> = Vec::new();
    let mut with_samples: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim_start();
            let mut parts = c.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            if kw == "HELP" || kw == "TYPE" {
                let name = parts.next().unwrap_or("");
                if !valid_metric_name(name) {
                    return Err(format!("bad name in {line:?}"));
                }
                let arg = parts.next().unwrap_or("");
                if with_samples.contains(name) {
                    return Err(format!("{kw} for {name} after its samples"));
                }
                if kw == "HELP" {
                    if ex.help.insert(name.into(), arg.into()).is_some() {
                        return Err(format!("two HELP lines for {name}"));
                    }
                } else {
                    if !matches!(
                        arg,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(format!("bad type in {line:?}"));
                    }
                    if ex.types.insert(name.into(), arg.into()).is_some() {
                        return Err(format!("two TYPE lines for {name}"));
                    }
                }
            }
            continue;
        }
        let s = parse_sample(line)?;
        let fam = family_of(&s.name, &ex.types);
        if seen_families.last() != Some(&fam) {
            if seen_families.contains(&fam) {
                return Err(format!("samples of {fam} are not contiguous"));
            }
            seen_families.push(fam.clone());
        }
        with_samples.insert(fam.clone());
        let mut lbl = s.labels.clone();
        lbl.sort();
        let key = format!("{}{:?}", s.name, lbl);
        if !series.insert(key.clone()) {
            return Err(format!("duplicate series {key}"));
        }
        if ex.types.get(&fam).map(String::as_str) == Some("counter")
            && (s.value.is_nan() || s.value < 0.0)
        {
            return Err(format!("negative counter {line:?}"));
        }
        ex.samples.push(s);
    }
    // Histograms
    for (fam, ty) in &ex.types {
        if ty != "histogram" {
            continue;
        }
        let mut groups: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
        for s in ex
            .samples
            .iter()
            .filter(|s| s.name == format!("{fam}_bucket"))
        {
            let le = s
                .labels
                .iter()
                .find(|(n, _)| n == "le")
                .ok_or_else(|| format!("{fam}_bucket without le"))?;
            let le = parse_value(&le.1)?;
            let mut rest: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(n, _)| n != "le")
                .cloned()
                .collect();
            rest.sort();
            groups
                .entry(format!("{rest:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, buckets) in groups {
            if !buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            {
                return Err(format!("{fam}{labels}: buckets not ascending/cumulative"));
            }
            let inf = buckets
                .last()
                .filter(|b| b.0.is_infinite())
                .ok_or_else(|| format!("{fam}{labels}: no +Inf bucket"))?
                .1;
            let find = |suffix: &str| {
                ex.samples.iter().find(|s| {
                    let mut l = s.labels.clone();
                    l.sort();
                    s.name == format!("{fam}{suffix}") && format!("{l:?}") == labels
                })
            };
            let count = find("_count").ok_or_else(|| format!("{fam}{labels}: no _count"))?;
            if count.value != inf {
                return Err(format!("{fam}{labels}: +Inf bucket != _count"));
            }
            find("_sum").ok_or_else(|| format!("{fam}{labels}: no _sum"))?;
        }
    }
    Ok(ex)
}
