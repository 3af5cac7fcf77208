"""ROS 2 adapters: message conversion, parameters, nodes. The only layer that imports rclpy and *_msgs."""
