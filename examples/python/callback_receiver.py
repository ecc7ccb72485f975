# callback_receiver.py（FastAPI 回调服务：接收任务结果）
#
# celerybridge: the original file from the test document, changed only to read PORT (default 8001)
# when run as a script. Characters the document lost in re-encoding are restored.
# Run: uvicorn callback_receiver:app --host 0.0.0.0 --port 8001
import os

from fastapi import FastAPI, Request

app = FastAPI(title="任务回调接收服务")


@app.post("/receive-task-result")
async def receive_task_result(request: Request):
    """接收 Celery 任务处理完成后的回调数据"""
    try:
        data = await request.json()
        print(f"【回调接收】任务 {data.get('task_id')}，状态：{data.get('status')}，数据：{data}")
        # 可扩展：将回调数据写入日志/数据库
        return {
            "code": 200,
            "message": "回调数据已接收",
            "received_data": data
        }
    except Exception as e:
        return {"code": 500, "message": f"回调处理失败：{str(e)}"}


if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT") or 8001))
