"""Deploying to a real project: gcloud and Firebase CLI commands, Cloud Scheduler, Cloud
Monitoring."""
