-- Issue #16: clients of the authorization code flow. A client may have the
-- `authorization_code` grant, with the redirect URIs codes may be sent to
-- and the post-logout redirect URIs RP-initiated logout may send users back
-- to; both are compared by exact string match. tokend checks each URI
-- (src/identity/redirect_uris.rs) before it gets here; the checks below
-- keep the rules that need no URI parsing.

-- The grants a client may have, now with authorization_code. (The
-- constraints of 0001 carry PostgreSQL's default names.)
ALTER TABLE oauth_clients
    DROP CONSTRAINT oauth_clients_grant_types_check,
    ADD CONSTRAINT oauth_clients_grant_types_check
        CHECK (grant_types <@ ARRAY['password', 'refresh_token', 'client_credentials', 'authorization_code']);

-- A public client (no secret) may use every grant but client_credentials,
-- which authenticates with nothing but the secret it lacks. A public client
-- of the authorization code flow (a browser or mobile app) proves itself
-- with PKCE instead.
ALTER TABLE oauth_clients
    DROP CONSTRAINT oauth_clients_check,
    ADD CONSTRAINT oauth_clients_public_grants_check
        CHECK (secret_sha256 IS NOT NULL
               OR grant_types <@ ARRAY['password', 'refresh_token', 'authorization_code']);

ALTER TABLE oauth_clients
    ADD COLUMN redirect_uris             text[] NOT NULL DEFAULT '{}',
    ADD COLUMN post_logout_redirect_uris text[] NOT NULL DEFAULT '{}',
    -- at most 16 of each (src/identity/redirect_uris.rs), no NULL entry
    ADD CONSTRAINT oauth_clients_redirect_uris_check
        CHECK (cardinality(redirect_uris) <= 16
               AND array_position(redirect_uris, NULL) IS NULL),
    ADD CONSTRAINT oauth_clients_post_logout_redirect_uris_check
        CHECK (cardinality(post_logout_redirect_uris) <= 16
               AND array_position(post_logout_redirect_uris, NULL) IS NULL),
    -- the authorization_code grant needs somewhere to send codes, and only
    -- that grant uses either list
    ADD CONSTRAINT oauth_clients_code_grant_redirects_check
        CHECK (('authorization_code' = ANY (grant_types)) = (cardinality(redirect_uris) > 0)
               AND (cardinality(post_logout_redirect_uris) = 0
                    OR 'authorization_code' = ANY (grant_types)));
