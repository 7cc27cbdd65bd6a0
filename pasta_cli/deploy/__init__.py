"""Deployment: many trained PASTA tasks on one frozen backbone. `pasta-predict` (files in, files out)
and `pasta-serve` (HTTP), both on `pasta_cli.multitask.MultiTaskPasta`."""
