//! Step outputs for copy and share (filled in by the copy and share handlers' issue).
