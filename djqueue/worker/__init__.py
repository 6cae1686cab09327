"""The worker side: the loop, rounds, execution, pools, heartbeat, remote-control handlers."""
