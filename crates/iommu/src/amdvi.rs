//! AMD-Vi (placeholder while the parsers land).
