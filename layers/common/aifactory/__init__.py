"""AI Factory's shared package: the domain logic behind every Lambda function."""
