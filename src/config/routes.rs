//! Which providers take which destinations: `ROUTES`, rules over the `PROVIDERS`.

use std::collections::HashSet;

use otp_relay_providers::Env;

use super::var::Var;
use super::ConfigError;
use crate::dispatch::routes::{RouteRule, RouteTable, Selector};

/// `ROUTES`: `SELECTOR=provider[,provider…]` rules separated by `;`, each selector at
/// most once, each provider one of `PROVIDERS` and at most once per rule. Unset, the
/// table is empty: every destination goes to `PROVIDERS` in order.
pub(super) fn parse_routes(
    env: &Env<'_>,
    providers: &[&'static str],
) -> Result<RouteTable, ConfigError> {
    let var = Var::new(env, "ROUTES", "+5511=twilio;BR=vonage,twilio;*=twilio");
    let Some(value) = var.value else {
        return Ok(RouteTable::default());
    };
    let mut selectors = HashSet::new();
    let mut rules = Vec::new();
    for rule in value.split(';').map(str::trim).filter(|r| !r.is_empty()) {
        let (selector, names) = rule.split_once('=').ok_or_else(|| {
            var.invalid(format!(
                "the rule {rule:?} is not SELECTOR=provider[,provider...]"
            ))
        })?;
        let selector = Selector::parse(selector).map_err(|problem| var.invalid(problem))?;
        if !selectors.insert(selector.to_string()) {
            return Err(var.invalid(format!("{selector} has more than one rule")));
        }
        let mut listed: Vec<&'static str> = Vec::new();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let lower = name.to_ascii_lowercase();
            let known = providers
                .iter()
                .copied()
                .find(|p| *p == lower)
                .ok_or_else(|| {
                    var.invalid(format!(
                        "the rule for {selector} names {name:?}, which is not in PROVIDERS ({})",
                        providers.join(",")
                    ))
                })?;
            if listed.contains(&known) {
                return Err(var.invalid(format!("the rule for {selector} lists {known:?} twice")));
            }
            listed.push(known);
        }
        if listed.is_empty() {
            return Err(var.invalid(format!("the rule for {selector} names no provider")));
        }
        rules.push(RouteRule {
            selector,
            providers: listed,
        });
    }
    if rules.is_empty() {
        return Err(var.invalid("no rule: write SELECTOR=provider[,provider...]"));
    }
    Ok(RouteTable::new(rules))
}
