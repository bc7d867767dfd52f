//! Routes of GoTrue features this server does not offer, answered as GoTrue answers them when
//! the feature is off (rather than a bare 404): SAML single sign-on (`/sso`, any method, 404
//! `saml_provider_disabled`, GoTrue's `requireSAMLEnabled`). Web3 sign-in is refused in the
//! `/token` grant itself (422 `web3_provider_disabled`), phone sign-in where each phone route
//! reads its body.
use crate::error::{AuthError, ErrorCode};

/// `/sso`, `/sso/saml/metadata`, `/sso/saml/acs`: SAML is not configured.
pub async fn saml_disabled() -> AuthError {
    ErrorCode::SamlProviderDisabled.into()
}
