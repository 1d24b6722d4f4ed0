//! Step outputs for publish, retire and cleanup (filled in by those handlers' issue).
