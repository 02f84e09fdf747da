-- tokend schema, version 1: users, OAuth clients, signing keys and durable
-- revocations. Applied once by `tokend migrate`, inside one transaction.

-- Users. `username` is unique regardless of case (the unique index is on
-- lower(username)); the password is an argon2id PHC string. `not_before`
-- voids every token issued before it (logout-all, password change, disable);
-- it is mirrored in Redis, and Redis is re-seeded from here after data loss.
CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    username      text        NOT NULL CHECK (username ~ '^[A-Za-z0-9._@-]{1,64}$'),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    scopes        text[]      NOT NULL DEFAULT '{}',
    disabled      boolean     NOT NULL DEFAULT false,
    not_before    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_username_lower_key ON users (lower(username));
CREATE INDEX users_not_before_idx ON users (not_before) WHERE not_before IS NOT NULL;

-- OAuth clients. A confidential client's secret is 256 random bits generated
-- by tokend and stored only as its SHA-256; a public client has none.
CREATE TABLE oauth_clients (
    client_id           text        PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    secret_sha256       bytea       CHECK (secret_sha256 IS NULL OR length(secret_sha256) = 32),
    grant_types         text[]      NOT NULL CHECK (grant_types <@ ARRAY['password', 'refresh_token', 'client_credentials']),
    scopes              text[]      NOT NULL DEFAULT '{}',
    access_ttl_seconds  integer     CHECK (access_ttl_seconds > 0),
    refresh_ttl_seconds integer     CHECK (refresh_ttl_seconds > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- a public client may use the password grant only
    CHECK (secret_sha256 IS NOT NULL OR grant_types <@ ARRAY['password', 'refresh_token'])
);

-- Signing keys. The private key is sealed with AES-256-GCM under the
-- key-encryption key of the configuration (nonce || ciphertext || tag); the
-- clear private key is never stored. `kid` is the RFC 7638 thumbprint.
-- A key is published from `created_at`, signs from `signs_from` until a newer
-- key takes over (`retired_at`), and verifies until `verify_until`.
CREATE TABLE signing_keys (
    kid                text        PRIMARY KEY,
    algorithm          text        NOT NULL CHECK (algorithm IN ('EdDSA', 'ES256', 'RS256')),
    public_jwk         jsonb       NOT NULL,
    sealed_private_key bytea       NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    signs_from         timestamptz NOT NULL DEFAULT now(),
    retired_at         timestamptz,
    verify_until       timestamptz
);
CREATE INDEX signing_keys_signs_from_idx ON signing_keys (signs_from);

-- Durable revocations: every revoked access-token jti and refresh-token
-- family, kept until the token would have expired anyway. Redis is re-seeded
-- from this table when it loses its data.
CREATE TABLE revocations (
    token_id   text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('access', 'refresh_family')),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, token_id)
);
CREATE INDEX revocations_expires_at_idx ON revocations (expires_at);
