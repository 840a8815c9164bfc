//! Message texts: `MESSAGE_TEMPLATE` and one `MESSAGE_TEMPLATE_<LOCALE>` per locale.

use std::collections::BTreeMap;

use otp_relay_providers::Env;

use super::var::Var;
use super::ConfigError;
use crate::message::MessageTemplates;

/// The default template, or `MESSAGE_TEMPLATE`, and every `MESSAGE_TEMPLATE_<LOCALE>`
/// among `vars` (the whole environment).
pub(super) fn parse_templates(
    env: &Env<'_>,
    vars: &BTreeMap<String, String>,
) -> Result<MessageTemplates, ConfigError> {
    let template_var = Var::new(env, "MESSAGE_TEMPLATE", "\"Your code is {code}\"");
    let mut templates = MessageTemplates::new(
        template_var
            .value
            .unwrap_or(crate::message::DEFAULT_TEMPLATE),
    )
    .map_err(|problem| template_var.invalid(problem))?;
    for (name, value) in vars.iter() {
        if let Some(locale) = name.strip_prefix("MESSAGE_TEMPLATE_") {
            templates
                .add_locale(locale, value)
                .map_err(|problem| ConfigError::Invalid {
                    var: "MESSAGE_TEMPLATE_<LOCALE>",
                    value: Some(format!("{name}={value}")),
                    problem,
                    example: "\"Seu código é {code}\" as MESSAGE_TEMPLATE_PT_BR",
                })?;
        }
    }
    Ok(templates)
}
