//! A route's effective auth policy (frontend defaults with the route's
//! overrides) and the authorization decision on a verified identity.

use crate::config::security::{AuthPolicy, Credential, MatchMode};

use super::identity::Identity;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRt {
    pub require: Credential,
    pub providers: Option<Vec<String>>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub mode: MatchMode,
}

impl AuthRt {
    pub fn merge(frontend: &AuthPolicy, route: &AuthPolicy) -> Self {
        Self {
            require: route
                .require
                .or(frontend.require)
                .unwrap_or(Credential::None),
            providers: route
                .providers
                .clone()
                .or_else(|| frontend.providers.clone()),
            scopes: route
                .scopes
                .clone()
                .or_else(|| frontend.scopes.clone())
                .unwrap_or_default(),
            roles: route
                .roles
                .clone()
                .or_else(|| frontend.roles.clone())
                .unwrap_or_default(),
            mode: route
                .match_mode
                .or(frontend.match_mode)
                .unwrap_or(MatchMode::Any),
        }
    }

    pub fn needs_authorization(&self) -> bool {
        !self.scopes.is_empty() || !self.roles.is_empty()
    }

    /// Whether the identity carries the scopes and roles this route needs.
    pub fn authorizes(&self, identity: &Identity) -> bool {
        let check = |required: &[String], held: &[String]| {
            required.is_empty()
                || match self.mode {
                    MatchMode::Any => required.iter().any(|r| held.contains(r)),
                    MatchMode::All => required.iter().all(|r| held.contains(r)),
                }
        };
        check(&self.scopes, &identity.scopes) && check(&self.roles, &identity.roles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(roles: &[&str], scopes: &[&str]) -> Identity {
        Identity {
            roles: roles
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into(),
            scopes: scopes
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into(),
            ..Identity::default()
        }
    }

    #[test]
    fn any_and_all_semantics() {
        let mut rt = AuthRt::merge(
            &AuthPolicy::default(),
            &AuthPolicy {
                roles: Some(vec!["admin".into(), "support".into()]),
                scopes: Some(vec!["a".into(), "b".into()]),
                ..AuthPolicy::default()
            },
        );
        assert!(rt.authorizes(&identity(&["support"], &["b"])));
        assert!(!rt.authorizes(&identity(&["customer"], &["a", "b"])));
        rt.mode = MatchMode::All;
        assert!(!rt.authorizes(&identity(&["admin"], &["a", "b"])));
        assert!(rt.authorizes(&identity(&["admin", "support"], &["a", "b"])));
    }

    #[test]
    fn route_overrides_frontend() {
        let frontend = AuthPolicy {
            require: Some(Credential::Jwt),
            roles: Some(vec!["customer".into()]),
            ..AuthPolicy::default()
        };
        let route = AuthPolicy {
            require: Some(Credential::None),
            ..AuthPolicy::default()
        };
        let rt = AuthRt::merge(&frontend, &route);
        assert_eq!(rt.require, Credential::None);
        assert_eq!(rt.roles, vec!["customer".to_string()]);
    }
}
