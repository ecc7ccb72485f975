"""The original rig's callback pattern, for comparison: the task_success handler in tasks.py
calls send_callback, which does one blocking requests.post(url, json=payload, timeout=10) per
finished task, sequentially, with no retry and no outbox.

Usage: python python_pattern.py URL COUNT PREFIX
Posts COUNT callbacks with task ids PREFIX-0 .. PREFIX-(COUNT-1) and prints one JSON line:
{"count": COUNT, "ok": successes, "failed": failures, "seconds": time spent posting}.
The original's print() calls are left out, which only flatters this side of the comparison.
"""
import json
import sys
import time
from datetime import datetime

import requests


def send_callback(url, task_id, status, result=None, error=None):
    callback_data = {
        "task_id": task_id,
        "status": status,
        "result": result,
        "error": error,
        "timestamp": datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
    }
    response = requests.post(
        url=url,
        json=callback_data,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    response.raise_for_status()


def main():
    url, count, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ok = failed = 0
    start = time.perf_counter()
    for i in range(count):
        task_id = f"{prefix}-{i}"
        result = {
            "status": "success",
            "business_task_id": task_id,
            "data": {"task_index": i, "content": f"test task {i}"},
            "message": "task done",
            "process_time": 1.0,
        }
        try:
            send_callback(url, task_id, "success", result=result)
            ok += 1
        except Exception:  # the original prints and swallows every error
            failed += 1
    seconds = time.perf_counter() - start
    print(json.dumps({"count": count, "ok": ok, "failed": failed, "seconds": seconds}))


if __name__ == "__main__":
    main()
