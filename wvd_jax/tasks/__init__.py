"""Tasks run by a trained model: sampling 6D videos, and (later) depth, poses and camera control."""
