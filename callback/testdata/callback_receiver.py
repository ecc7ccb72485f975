# callback_receiver.py — the original rig's FastAPI callback service, from
# /work/shared/seed/original-test-document.zh.txt, unchanged in behaviour. Only the layout was
# restored (the document's copy lost its indentation) and the Chinese strings, partly garbled
# there, were restored to their evident text. Run: uvicorn callback_receiver:app --port 8001
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
    uvicorn.run(app, host="0.0.0.0", port=8001)
