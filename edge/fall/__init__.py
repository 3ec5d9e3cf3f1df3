"""fall"""
