"""Credentials in configuration: literal values, environment references and AWS Secrets Manager references."""
