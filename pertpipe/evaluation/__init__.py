"""Evaluation: cell-eval wrappers (celleval), the fast local scorer (metrics), leaderboard and report."""
