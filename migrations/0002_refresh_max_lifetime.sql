-- Issue #13: refresh-token families get an absolute lifetime. A client may
-- have its own (`tokend client add --refresh-max-lifetime`); NULL means the
-- configuration's `tokens.refresh_max_lifetime`.
ALTER TABLE oauth_clients
    ADD COLUMN refresh_max_lifetime_seconds integer
        CHECK (refresh_max_lifetime_seconds > 0);
