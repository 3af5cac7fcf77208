"""Bag reading, writing and replay helpers (rosbags; no rclpy)."""
