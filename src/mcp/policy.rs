//! MCP policy: the ordered tool, resource and prompt rules of a route, and whether a
//! verified principal may do what a request asks.
//!
//! Runs after the token step on every request, cached token or not: every scope the route
//! requires must be present, directly or through `scope_hierarchy` (MCP 2026-07-28:
//! servers account for scope hierarchies), and each operation of an inspected body is
//! matched against the route's glob patterns (first match, in config order) for the extra
//! scopes it needs. The token's `aud` must contain one of the route's resource
//! identifiers (RFC 8707, SPEC-CHECKLIST §9.1).

use crate::compile::CompileError;
use crate::error::Refusal;
use crate::mcp::body::{Calls, Op};
use crate::principal::Principal;
use crate::scope::{check_scope_token, Hierarchy, RequiredScope};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::HashMap;

/// One ordered pattern of a tool, resource or prompt policy.
#[derive(Debug)]
pub struct Rule {
    pub pattern: String,
    matcher: wildmatch::WildMatch,
    pub scopes: Vec<RequiredScope>,
}

impl Rule {
    pub fn new(pattern: &str, scopes: Vec<RequiredScope>) -> Rule {
        Rule {
            pattern: pattern.to_string(),
            matcher: wildmatch::WildMatch::new(pattern),
            scopes,
        }
    }

    /// A `resources` rule: its pattern is put in the canonical spelling the URIs are
    /// matched in ([`crate::mcp::resource_uri::canonical_pattern`]).
    pub fn resource(self) -> Result<Rule, String> {
        let p = crate::mcp::resource_uri::canonical_pattern(&self.pattern).ok_or_else(|| {
            format!(
                "resources: pattern {:?} holds a malformed percent-encoding or a control character",
                self.pattern
            )
        })?;
        Ok(Rule::new(&p, self.scopes))
    }
}

/// The ordered rules of one of `tools`, `resources`, `prompts`, compiled for lookups whose
/// cost does not grow with their number: patterns without wildcards in a map, `prefix*`
/// patterns in a map keyed by prefix (tried at each prefix length the rules use), and only
/// the other globs matched one by one. The answer is the first matching rule in config
/// order, as a scan of every pattern would give it.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Pattern without `*` or `?` → the first rule with it.
    literal: HashMap<String, usize>,
    /// `p*` (`p` without wildcards) → the first rule with it.
    prefix: HashMap<String, usize>,
    /// The lengths of the keys of `prefix`, ascending, without repeats.
    prefix_lens: Vec<usize>,
    /// The other rules, in order.
    globs: Vec<usize>,
}

impl Rules {
    pub fn new(rules: Vec<Rule>) -> Rules {
        let mut out = Rules::default();
        for (i, r) in rules.iter().enumerate() {
            let wild = |s: &str| s.contains(['*', '?']);
            let head = r.pattern.trim_end_matches('*');
            if !wild(&r.pattern) {
                out.literal.entry(r.pattern.clone()).or_insert(i);
            } else if !wild(head) {
                out.prefix.entry(head.to_string()).or_insert(i);
                out.prefix_lens.push(head.len());
            } else {
                out.globs.push(i);
            }
        }
        out.prefix_lens.sort_unstable();
        out.prefix_lens.dedup();
        out.rules = rules;
        out
    }

    /// The first rule, in config order, whose pattern matches `name`.
    pub fn first_match(&self, name: &str) -> Option<&Rule> {
        let mut best = self.literal.get(name).copied();
        for &len in &self.prefix_lens {
            if len > name.len() {
                break;
            }
            // Not a char boundary: `name` cannot start with a prefix of that length.
            let Some(head) = name.get(..len) else {
                continue;
            };
            if let Some(&i) = self.prefix.get(head) {
                best = Some(best.map_or(i, |b| b.min(i)));
            }
        }
        for &i in &self.globs {
            if best.is_some_and(|b| b < i) {
                break;
            }
            if self.rules[i].matcher.matches(name) {
                best = Some(i);
                break;
            }
        }
        best.and_then(|i| self.rules.get(i))
    }
}

impl From<Vec<Rule>> for Rules {
    fn from(rules: Vec<Rule>) -> Rules {
        Rules::new(rules)
    }
}

impl std::ops::Deref for Rules {
    type Target = [Rule];
    fn deref(&self) -> &[Rule] {
        &self.rules
    }
}

impl<'a> IntoIterator for &'a Rules {
    type Item = &'a Rule;
    type IntoIter = std::slice::Iter<'a, Rule>;
    fn into_iter(self) -> Self::IntoIter {
        self.rules.iter()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DefaultPolicy {
    #[default]
    Allow,
    Deny,
}

/// A route's MCP policy, compiled.
#[derive(Debug, Default)]
pub struct Policy {
    pub tools: Rules,
    pub resources: Rules,
    pub prompts: Rules,
    pub default: DefaultPolicy,
    pub filter_tools_list: bool,
    /// `filter_resources_list`: `resources/list` and `resources/templates/list` answers lose
    /// what the `resources` rules do not let the caller read.
    pub filter_resources_list: bool,
    /// `filter_prompts_list`: `prompts/list` answers lose what the `prompts` rules do not let
    /// the caller get.
    pub filter_prompts_list: bool,
    /// The protocol versions the route lets through (`protocol_versions`); empty: any.
    pub protocol_versions: Vec<String>,
    /// Tool-definition pinning (`pin_tools`).
    pub pins: Option<crate::mcp::pins::Pins>,
    /// `structured_denials`: a refused `tools/call` carries the SEP-2643 envelope.
    pub structured_denials: bool,
}

/// What one operation needs beyond the route's scopes.
#[derive(Debug, PartialEq, Eq)]
pub enum Need<'a> {
    Scopes(&'a [RequiredScope]),
    /// No pattern matched and the default is deny.
    Denied,
}

impl Policy {
    /// Whether requests on the route must have their body inspected.
    pub fn inspects(&self) -> bool {
        !self.tools.is_empty()
            || !self.resources.is_empty()
            || !self.prompts.is_empty()
            || self.default == DefaultPolicy::Deny
            || self.filter_tools_list
            || self.filter_resources_list
            || self.filter_prompts_list
            || !self.protocol_versions.is_empty()
            || self.pins.is_some()
            || self.structured_denials
    }

    /// Whether every answer on the route is judged, and refused when it cannot be read: a
    /// list is filtered, or changed tools are hidden (`pin_tools` in `enforce` mode).
    pub fn judges_answers(&self) -> bool {
        self.filter_tools_list
            || self.filter_resources_list
            || self.filter_prompts_list
            || self.pins_enforced()
    }

    /// `pin_tools` in `enforce` mode.
    pub fn pins_enforced(&self) -> bool {
        self.pins
            .as_ref()
            .is_some_and(|p| p.mode == crate::mcp::pins::PinMode::Enforce)
    }

    fn lookup<'a>(&'a self, rules: &'a Rules, name: &str) -> Need<'a> {
        match rules.first_match(name) {
            Some(r) => Need::Scopes(&r.scopes),
            None if self.default == DefaultPolicy::Deny => Need::Denied,
            None => Need::Scopes(&[]),
        }
    }

    /// What calling tool `name` needs.
    pub fn tool(&self, name: &str) -> Need<'_> {
        self.lookup(&self.tools, name)
    }

    /// What an operation needs beyond the route's scopes: one entry per tool, resource
    /// or prompt it names (first matching pattern, in config order), none when it names
    /// nothing. A method not in the table is `Denied` under `default_tool_policy: deny`;
    /// under `allow` it needs what its `params.name` would need as a tool and as a prompt
    /// and what its `params.uri` would need as a resource, since the gateway cannot know
    /// which the upstream will take it for.
    pub fn needs<'a>(&'a self, op: &Op) -> Vec<Need<'a>> {
        match op {
            Op::ToolsCall(n) => vec![self.lookup(&self.tools, n)],
            Op::ResourcesRead(u)
            | Op::ResourcesSubscribe(u)
            | Op::ResourcesUnsubscribe(u)
            | Op::CompleteResource(u) => vec![self.lookup(&self.resources, u)],
            Op::PromptsGet(n) | Op::CompletePrompt(n) => vec![self.lookup(&self.prompts, n)],
            Op::SubscriptionsListen(uris) => uris
                .iter()
                .map(|u| self.lookup(&self.resources, u))
                .collect(),
            Op::Unknown { .. } if self.default == DefaultPolicy::Deny => vec![Need::Denied],
            Op::Unknown { name, uri, .. } => {
                let mut out = Vec::new();
                if let Some(n) = name {
                    out.push(self.lookup(&self.tools, n));
                    out.push(self.lookup(&self.prompts, n));
                }
                if let Some(u) = uri {
                    out.push(self.lookup(&self.resources, u));
                }
                out
            }
            Op::ToolsList | Op::Known(_) | Op::Response => Vec::new(),
        }
    }
}

/// A route's policy, as the file gives it: `tools`, `resources`, `prompts` (glob →
/// scopes, in file order), `default_tool_policy`, `filter_tools_list`.
pub struct FilePolicy<'a> {
    pub tools: Option<&'a serde_yaml::Mapping>,
    pub resources: Option<&'a serde_yaml::Mapping>,
    pub prompts: Option<&'a serde_yaml::Mapping>,
    pub default: DefaultPolicy,
    pub filter_tools_list: bool,
    pub filter_resources_list: bool,
    pub filter_prompts_list: bool,
    pub protocol_versions: Option<&'a [String]>,
    pub pin_tools: Option<crate::mcp::pins::FilePins>,
    pub structured_denials: bool,
    /// The config file's name, to resolve a relative pinned file.
    pub source: &'a str,
}

/// The rules of one of `tools`, `resources`, `prompts` (`what`), scopes pre-resolved.
fn rules(
    what: &str,
    m: Option<&serde_yaml::Mapping>,
    hierarchy: &Hierarchy,
) -> Result<Vec<Rule>, CompileError> {
    let Some(m) = m else { return Ok(Vec::new()) };
    let bad = |reason: String| CompileError::new(what, reason);
    let mut out = Vec::new();
    for (k, v) in m {
        let pattern = k
            .as_str()
            .ok_or_else(|| bad(format!("{what}: pattern {k:?} must be a string")))?;
        let list: Vec<String> = serde_yaml::from_value(v.clone())
            .map_err(|_| bad(format!("{what}: {pattern:?} must map to a list of scopes")))?;
        let mut scopes = Vec::new();
        for sc in &list {
            check_scope_token(sc).map_err(bad)?;
            scopes.push(hierarchy.required(sc));
        }
        out.push(Rule::new(pattern, scopes));
    }
    Ok(out)
}

impl Policy {
    /// Check and compile a route's policy. `oauth_only`: the route's `auth` is `oauth` (a
    /// policy needs the token's scopes).
    pub fn compile(
        f: FilePolicy<'_>,
        hierarchy: &Hierarchy,
        oauth_only: bool,
    ) -> Result<Policy, CompileError> {
        let policy = Policy {
            tools: rules("tools", f.tools, hierarchy)?.into(),
            resources: rules("resources", f.resources, hierarchy)?
                .into_iter()
                .map(Rule::resource)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CompileError::new("resources", e))?
                .into(),
            prompts: rules("prompts", f.prompts, hierarchy)?.into(),
            default: f.default,
            filter_tools_list: f.filter_tools_list,
            filter_resources_list: f.filter_resources_list,
            filter_prompts_list: f.filter_prompts_list,
            protocol_versions: crate::mcp::protocol::compile(f.protocol_versions)?,
            pins: f
                .pin_tools
                .map(|p| crate::mcp::pins::Pins::compile(p, f.source))
                .transpose()?,
            structured_denials: f.structured_denials,
        };
        if policy.inspects() && !oauth_only {
            return Err(CompileError::new(
                "auth",
                "tool policies, list filters and protocol_versions need auth: oauth",
            ));
        }
        Ok(policy)
    }

    /// Every scope the rules name, in file order (for `scopes_supported`).
    pub fn scope_names(&self) -> impl Iterator<Item = &str> {
        self.tools
            .iter()
            .chain(&self.resources)
            .chain(&self.prompts)
            .flat_map(|r| r.scopes.iter().map(|s| s.name.as_str()))
    }
}

fn satisfied(required: &RequiredScope, p: &Principal) -> bool {
    required.satisfied(&p.scopes)
}

/// Every scope the route requires (`required`), directly or through `scope_hierarchy`.
pub fn check_scopes(required: &[RequiredScope], p: &Principal) -> Result<(), Refusal> {
    if required.iter().all(|r| satisfied(r, p)) {
        Ok(())
    } else {
        Err(Refusal::InsufficientScope)
    }
}

/// Route scopes plus what each MCP operation of the body needs. A refusal names every
/// scope the operation requires, in one challenge, so the client can step up once.
pub fn authorize_calls(
    required: &[RequiredScope],
    policy: &Policy,
    p: &Principal,
    calls: &Calls,
) -> Result<(), Refusal> {
    let mut extra: Vec<&RequiredScope> = Vec::new();
    for op in &calls.ops {
        for need in policy.needs(op) {
            match need {
                Need::Denied => return Err(Refusal::PolicyDenied),
                Need::Scopes(s) => extra.extend(s.iter()),
            }
        }
    }
    if required
        .iter()
        .chain(extra.iter().copied())
        .all(|r| satisfied(r, p))
    {
        return Ok(());
    }
    if extra.is_empty() {
        return Err(Refusal::InsufficientScope);
    }
    let mut names: Vec<&str> = Vec::new();
    for r in required.iter().chain(extra.iter().copied()) {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    Err(Refusal::ScopeFor(names.join(" ").into_boxed_str()))
}

/// Whether `p` could call tool `name` on a route requiring `required` with `policy` (for
/// `tools/list` filtering).
pub fn tool_allowed(
    required: &[RequiredScope],
    policy: &Policy,
    p: &Principal,
    name: &str,
) -> bool {
    match policy.tool(name) {
        Need::Denied => false,
        Need::Scopes(s) => required.iter().chain(s.iter()).all(|r| satisfied(r, p)),
    }
}

/// The rules a listed item is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Tool,
    /// A resource URI or URI template, in its canonical spelling.
    Resource,
    Prompt,
}

/// Whether a caller may see an item of a list: the route's scopes and what the matching rule
/// needs, as for calling, reading or getting it; without a principal (an `auth: none`
/// route), only an item that needs no scope at all.
pub fn visible(
    required: &[RequiredScope],
    policy: &Policy,
    p: Option<&Principal>,
    what: Listed,
    name: &str,
) -> bool {
    let rules = match what {
        Listed::Tool => &policy.tools,
        Listed::Resource => &policy.resources,
        Listed::Prompt => &policy.prompts,
    };
    match (policy.lookup(rules, name), p) {
        (Need::Denied, _) => false,
        (Need::Scopes(s), Some(p)) => required.iter().chain(s.iter()).all(|r| satisfied(r, p)),
        (Need::Scopes(s), None) => required.is_empty() && s.is_empty(),
    }
}

/// Whether a caller may see a tool in a list: [`tool_allowed`] for a principal; without one
/// (an `auth: none` route), only a tool that needs no scope at all.
pub fn tool_visible(
    required: &[RequiredScope],
    policy: &Policy,
    p: Option<&Principal>,
    name: &str,
) -> bool {
    match p {
        Some(p) => tool_allowed(required, policy, p, name),
        None => match policy.tool(name) {
            Need::Denied => false,
            Need::Scopes(s) => required.is_empty() && s.is_empty(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::Config;
    use std::sync::Arc;

    fn principal(aud: &str, scopes: &str) -> Principal {
        Principal {
            method: crate::principal::AuthMethod::Jwt,
            any_audience: false,
            iss: Arc::from("https://as"),
            issuer_name: Arc::from("a"),
            subject: None,
            client_id: None,
            scopes: crate::scope::ScopeSet::parse(scopes),
            audiences: Arc::from(vec![crate::scope::canonical_audience(aud).into_boxed_str()]),
            exp: i64::MAX / 2,
            nbf: None,
            skew: 0,
            cnf_jkt: None,
            jti: None,
            iat: None,
            azp: None,
        }
    }

    fn config() -> Config {
        Config::from_yaml(
            "t",
            "listen: {address: '127.0.0.1:1', public_url: 'https://mcp.example.com'}\nadmin: {address: '127.0.0.1:2'}\nscope_hierarchy: {files: ['files:read']}\nissuers: [{name: a, issuer: 'https://as'}]\nroutes:\n- {name: m, path_prefix: /mcp, upstream: 'http://127.0.0.1:3', scopes: ['mcp:read']}\n- {name: f, path_prefix: /files, upstream: 'http://127.0.0.1:3', scopes: ['files:read']}\n",
        )
        .unwrap()
    }

    fn scope(s: &str) -> RequiredScope {
        RequiredScope::new(s, vec![s.into()])
    }

    impl Policy {
        /// The one need of an operation that names at most one thing.
        fn need<'a>(&'a self, op: &Op) -> Need<'a> {
            let mut n = self.needs(op);
            assert!(n.len() <= 1, "{op:?} names several things");
            n.pop().unwrap_or(Need::Scopes(&[]))
        }
    }

    /// The compiled rules answer what a scan of every pattern in order answers.
    #[test]
    fn compiled_rules_agree_with_a_scan() {
        let patterns = [
            "read_file",
            "read_*",
            "*_admin",
            "",
            "re?d_file",
            "read_file",
            "a*b",
            "**",
            "x**",
            "é*",
            "éa",
            "read_",
            "*",
            "read_file_*",
            "?",
            "tool",
        ];
        let names = [
            "read_file",
            "read_x",
            "read_",
            "read",
            "db_admin",
            "",
            "reed_file",
            "ab",
            "axb",
            "x",
            "xy",
            "é",
            "éa",
            "éb",
            "e",
            "read_file_2",
            "tool",
            "t",
            "tools",
            "b",
        ];
        // Every window of the pattern list, so each shape meets the others in each order.
        for start in 0..patterns.len() {
            for end in start..=patterns.len() {
                let list: Vec<Rule> = patterns[start..end]
                    .iter()
                    .map(|p| Rule::new(p, vec![]))
                    .collect();
                let scan: Vec<Option<usize>> = names
                    .iter()
                    .map(|n| list.iter().position(|r| r.matcher.matches(n)))
                    .collect();
                let rules = Rules::new(list);
                for (n, want) in names.iter().zip(scan) {
                    let got = rules
                        .first_match(n)
                        .map(|r| std::ptr::from_ref(r) as usize - rules.as_ptr() as usize)
                        .map(|off| off / std::mem::size_of::<Rule>());
                    assert_eq!(got, want, "{n:?} against {:?}", &patterns[start..end]);
                }
            }
        }
    }

    #[test]
    fn first_matching_pattern_wins() {
        let p = Policy {
            tools: vec![
                Rule::new("read_*", vec![scope("repo:read")]),
                Rule::new("delete_*", vec![scope("repo:admin")]),
                Rule::new("*", vec![]),
            ]
            .into(),
            resources: vec![Rule::new("file:///secrets/*", vec![scope("secrets:read")])].into(),
            ..Policy::default()
        };
        assert!(
            matches!(p.need(&Op::ToolsCall("read_x".into())), Need::Scopes(s) if s[0].name == "repo:read")
        );
        assert!(
            matches!(p.need(&Op::ToolsCall("delete_x".into())), Need::Scopes(s) if s[0].name == "repo:admin")
        );
        assert_eq!(p.need(&Op::ToolsCall("other".into())), Need::Scopes(&[]));
        assert!(
            matches!(p.need(&Op::ResourcesRead("file:///secrets/a/b".into())), Need::Scopes(s) if s.len() == 1)
        );
        let deny = Policy {
            tools: vec![Rule::new("safe_*", vec![])].into(),
            default: DefaultPolicy::Deny,
            ..Policy::default()
        };
        assert_eq!(deny.need(&Op::ToolsCall("rm".into())), Need::Denied);
        assert_eq!(deny.need(&Op::PromptsGet("p".into())), Need::Denied);
        assert_eq!(deny.need(&Op::ToolsList), Need::Scopes(&[]));
    }
    #[test]
    fn scopes_exact_tokens_and_hierarchy() {
        let c = config();
        let (m, f) = (&c.routes[0].auth.scopes, &c.routes[1].auth.scopes);
        assert!(check_scopes(m, &principal("x", "mcp:read")).is_ok());
        assert!(check_scopes(m, &principal("x", "mcp:readx")).is_err());
        assert!(check_scopes(m, &principal("x", "a mcp:read b")).is_ok());
        assert!(check_scopes(f, &principal("x", "files")).is_ok());
        assert!(check_scopes(f, &principal("x", "files:write")).is_err());
    }
}
